#!/usr/bin/env python3
"""nanochat chat when the conversation fills the context (-c 64), through a terminal (without one
chat answers a single turn). Chat must go on: it drops the oldest whole turns and keeps the system
prompt, saying how many; it refuses a message that cannot fit even alone and keeps the history;
an answer cut by a full context is followed by a turn that works; /exit and Ctrl-D exit 0.

The expected prompt of every turn is computed independently — the plain template rendered here,
tokenized by `nanochat tokenize` — and compared with the prompt size chat's /stats reports.

Usage: chat_context.py NANOCHAT MODEL WORKDIR. Prints one FAIL line per failed check; exit status 1
when any failed."""
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios

BIN, MODEL, WORK = sys.argv[1:4]
CONTEXT = 64
SYSTEM = "Speak briefly."
TIMEOUT = 120  # seconds for one answer, on a busy machine

failures = 0


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print(f"FAIL: chat context: {what}", file=sys.stderr)
    return cond


def render(messages):
    """The plain template (src/model/chat_template.cpp) with the generation prompt."""
    return "".join(f"{role.capitalize()}: {text}\n" for role, text in messages) + "Assistant:"


def count_tokens(messages):
    path = os.path.join(WORK, "rendered.txt")
    with open(path, "wb") as f:
        f.write(render(messages).encode("utf-8", "surrogateescape"))
    r = subprocess.run([BIN, "tokenize", "-m", MODEL, "-f", path, "--special", "--ids"],
                       capture_output=True, check=True)
    return len(r.stdout.split())


class Chat:
    """nanochat chat on a pseudo-terminal (stdin and stdout), stderr on a pipe."""

    def __init__(self, *args):
        master, slave = pty.openpty()
        # Wide enough that no typed line wraps; no output processing, so answers arrive byte for
        # byte ("\n", not "\r\n").
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 1000, 0, 0))
        attrs = termios.tcgetattr(slave)
        attrs[1] &= ~termios.OPOST
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        env = dict(os.environ, TERM="dumb")
        self.proc = subprocess.Popen(
            [BIN, "chat", "-m", MODEL, "-c", str(CONTEXT), "--temp", "0", "--no-color",
             "--chat-template", "plain", "--autotune", "off", "-sys", SYSTEM, *args],
            stdin=slave, stdout=slave, stderr=subprocess.PIPE, env=env, start_new_session=True)
        os.close(slave)
        self.master = master
        os.set_blocking(self.proc.stderr.fileno(), False)
        self.out, self.err = self.until_prompt()

    def until_prompt(self):
        """What chat wrote to the terminal and to stderr until it next waits at the "> " prompt."""
        out = b""
        while not (out.endswith(b"\n> ") or out == b"> "):
            ready, _, _ = select.select([self.master], [], [], TIMEOUT)
            if not ready:
                raise TimeoutError(f"no prompt after {out!r}")
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: chat exited
                data = b""
            if not data:
                raise EOFError(f"chat exited (status {self.proc.wait()}) after {out!r}; "
                               f"stderr {self.proc.stderr.read()!r}")
            out += data
        # stderr is written before the prompt, so the pipe already holds all of it.
        return out, (self.proc.stderr.read() or b"").decode("utf-8", "replace")

    def send(self, line):
        """Types `line` and Enter; returns (answer text, stderr). The terminal shows the typed
        line, a new line, then the streamed answer and "\n" (nothing for a refused message)."""
        os.write(self.master, line.encode() + b"\r")
        out, err = self.until_prompt()
        echo = line.encode() + b"\r\n"
        if not check(out.startswith(echo), f"{line!r}: the terminal shows {out!r}"):
            return "", err
        return out[len(echo):-len(b"> ")].removesuffix(b"\n").decode("utf-8",
                                                                      "surrogateescape"), err

    def stats(self):
        """/stats: (prompt tokens of the last answer, finish reason, answers so far)."""
        _, err = self.send("/stats")
        m = re.search(r"last answer:\nprompt eval: (\d+) tokens[^\n]*?(?:; (\d+) more reused "
                      r"from the cache)?\n.*?finish: +(\w+).*?conversation \((\d+) answers\)",
                      err, re.S)
        if not check(m, f"/stats: {err!r}"):
            return -1, "", -1
        return int(m[1]) + int(m[2] or 0), m[3], int(m[4])

    def finish(self, keys):
        os.write(self.master, keys)
        try:
            rc = self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = "none (still running)"
        err = self.proc.stderr.read() or b""
        os.close(self.master)
        return rc, err.decode("utf-8", "replace")


def converse(chat, room, messages):
    """Sends each message and checks chat against a reference conversation: the system prompt,
    then the newest whole turns that fit with `room` tokens left for the answer."""
    history = []  # (user, answer) turns chat should still hold
    seen = {"drop 1": 0, "drop more": 0, "refused": 0, "cut": 0}
    answers = 0
    for text in messages:
        alone = count_tokens([("system", SYSTEM), ("user", text)])
        answer, err = chat.send(text)
        if alone + room > CONTEXT:
            seen["refused"] += 1
            check(f"[this message takes {alone} tokens; with room for an answer it does not fit "
                  f"the context of {CONTEXT} tokens: shorten it, or restart with a larger -c]\n"
                  == err and answer == "", f"{text!r} ({alone} tokens) refused: {err!r}, {answer!r}")
            continue
        dropped = 0
        while True:
            kept = [("system", SYSTEM)]
            for user, said in history[dropped:]:
                kept += [("user", user), ("assistant", said)]
            kept.append(("user", text))
            if count_tokens(kept) + room <= CONTEXT:
                break
            dropped += 1
        history = history[dropped:]
        full = (f"[the context of {CONTEXT} tokens is full: dropped the oldest {dropped} "
                f"{'turn' if dropped == 1 else 'turns'}]\n")
        check((full in err) == (dropped > 0), f"{text!r}: expected {dropped} dropped, got {err!r}")
        if dropped:
            seen["drop 1" if dropped == 1 else "drop more"] += 1
        check(answer != "", f"{text!r}: no answer")
        answers += 1
        prompt, finish, turns = chat.stats()
        check(prompt == count_tokens(kept),
              f"{text!r}: the prompt has {prompt} tokens, not the {count_tokens(kept)} of "
              f"the system prompt, the last {len(history)} turns and the message")
        check(turns == answers, f"{text!r}: /stats counts {turns} answers, not {answers}")
        cut = "[the context is full: the answer was cut; the oldest turns will make room for " \
              "the next one]\n"
        check((cut in err) == (finish == "context"), f"{text!r}: finish {finish}, stderr {err!r}")
        if finish == "context":
            seen["cut"] += 1
        history.append((text, answer))
    return seen, answers


# Answers of at most 8 tokens: short turns until the oldest must go, a message too long for the
# context alone, a long one that needs two turns dropped, and short ones again.
short = ["hello there", "First Citizen: hear me speak.", "what now", "and then", "who is it"]
too_long = " ".join(["Before we proceed any further, hear me speak."] * 8)
longer = "You are all resolved rather to die than to famish? Resolved, resolved."
chat = Chat("-n", "8")
seen, answers = converse(chat, 8, short + [too_long, "still here?", longer, "good", "night"])
check(seen["drop 1"] >= 1 and seen["drop more"] >= 1 and seen["refused"] == 1,
      f"the conversation did not drop one turn, drop several and refuse one message: {seen}")
rc, err = chat.finish(b"/exit\r")
check(rc == 0, f"/exit: exit status {rc}, stderr {err!r}")
check(f"conversation ({answers} answers)" in err, f"/exit: the final stats: {err!r}")

# No limit on the answer: it runs until the context is full; the next turn drops the old ones.
chat = Chat("-n", "-1")
seen, answers = converse(chat, CONTEXT // 4, ["hello there", "what now", "and then"])
check(seen["cut"] >= 1 and seen["drop 1"] + seen["drop more"] >= 1,
      f"no answer was cut by the full context, or no turn dropped: {seen}")
rc, err = chat.finish(b"\x04")  # Ctrl-D at the prompt
check(rc == 0, f"Ctrl-D: exit status {rc}, stderr {err!r}")
check(f"conversation ({answers} answers)" in err, f"Ctrl-D: the final stats: {err!r}")

sys.exit(1 if failures else 0)
