// nanochat serve driven by OpenAI's official Node client (npm `openai`, installed by
// tools/setup.sh into .cache/openai-js): completions, chat, streaming, logprobs, n, stop, errors.
// Usage: node openai_client.mjs NANOCHAT_BINARY OPENAI_JS_DIR
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

const [binaryArg, openaiDir] = process.argv.slice(2);
const binary = path.resolve(binaryArg);
const require = createRequire(path.resolve(openaiDir, "package.json"));
const { default: OpenAI } = await import(require.resolve("openai"));

// Starts `nanochat serve` on a free loopback port; resolves when /health says ok.
// The user's settings must not change what the server does; the autotune cache is the test's.
const cache = mkdtempSync(path.join(tmpdir(), "nanochat-serve-test-"));
const baseEnv = Object.fromEntries(
  Object.entries(process.env).filter(
    ([k]) => !k.startsWith("NANOCHAT_ARG_") && k !== "NANOCHAT_API_KEY" && k !== "NANOCHAT_ISA",
  ),
);
baseEnv.NANOCHAT_CACHE = cache;

async function startServer(extraArgs = [], env = {}) {
  const child = spawn(binary, ["serve", "--port", "0", ...extraArgs], {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...baseEnv, ...env },
  });
  let stderr = "";
  const port = await new Promise((resolve, reject) => {
    child.stderr.on("data", (d) => {
      stderr += d;
      const m = stderr.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
      if (m) resolve(Number(m[1]));
    });
    child.on("exit", (code) => reject(new Error(`serve exited with ${code}: ${stderr}`)));
    setTimeout(() => reject(new Error(`serve did not start: ${stderr}`)), 30000).unref();
  });
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 300; i++) {
    const r = await fetch(`${base}/health`).catch(() => null);
    if (r && r.status === 200) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return { child, base, stderr: () => stderr };
}

async function stopServer(server) {
  const exited = new Promise((resolve) => server.child.on("exit", (code) => resolve(code)));
  server.child.kill("SIGTERM");
  return exited;
}

let server, client;
before(async () => {
  server = await startServer(["-np", "4"]);
  client = new OpenAI({ baseURL: `${server.base}/v1`, apiKey: "unused", maxRetries: 0 });
});
after(async () => {
  assert.equal(await stopServer(server), 0, "SIGTERM ends the server with status 0");
  rmSync(cache, { recursive: true, force: true });
});

const prompt = "fn fibonacci(n: u64) -> u64 {";

describe("models", () => {
  test("lists the one model it serves", async () => {
    const models = await client.models.list();
    assert.equal(models.data.length, 1);
    assert.equal(models.data[0].id, "nanochat-rust");
    assert.equal(models.data[0].object, "model");
    const one = await client.models.retrieve("nanochat-rust");
    assert.equal(one.id, "nanochat-rust");
  });
  test("an unknown model is a 404", async () => {
    await assert.rejects(client.models.retrieve("gpt-17"), (e) => e.status === 404);
    await assert.rejects(
      client.completions.create({ model: "gpt-17", prompt, max_tokens: 4 }),
      (e) => e.status === 404 && e.code === "model_not_found",
    );
  });
});

describe("completions", () => {
  test("answers with text, usage and a finish reason", async () => {
    const r = await client.completions.create({ model: "nanochat-rust", prompt, max_tokens: 12, seed: 7 });
    assert.equal(r.object, "text_completion");
    assert.equal(r.choices.length, 1);
    assert.equal(typeof r.choices[0].text, "string");
    assert.ok(["stop", "length"].includes(r.choices[0].finish_reason));
    assert.ok(r.usage.completion_tokens <= 12 && r.usage.completion_tokens >= 1);
    assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
    assert.ok(r.usage.prompt_tokens >= 5);
  });
  test("the same seed gives the same text; max_tokens is a limit", async () => {
    const a = await client.completions.create({ model: "nanochat-rust", prompt, max_tokens: 20, seed: 42, temperature: 1 });
    const b = await client.completions.create({ model: "nanochat-rust", prompt, max_tokens: 20, seed: 42, temperature: 1 });
    assert.equal(a.choices[0].text, b.choices[0].text);
    const c = await client.completions.create({ model: "nanochat-rust", prompt, max_tokens: 3, seed: 42, temperature: 1, ignore_eos: true });
    assert.equal(c.usage.completion_tokens, 3);
    assert.equal(c.choices[0].finish_reason, "length");
  });
  test("streams the same text as the whole answer, then usage and [DONE]", async () => {
    const whole = await client.completions.create({ prompt, max_tokens: 24, seed: 3 });
    const stream = await client.completions.create({
      prompt, max_tokens: 24, seed: 3, stream: true, stream_options: { include_usage: true },
    });
    let text = "", finish = null, usage = null;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        text += c.text;
        if (c.finish_reason) finish = c.finish_reason;
      }
    }
    assert.equal(text, whole.choices[0].text);
    assert.equal(finish, whole.choices[0].finish_reason);
    assert.deepEqual(usage, whole.usage);
  });
  test("echo, stop, n and logprobs", async () => {
    const echo = await client.completions.create({ prompt, max_tokens: 4, echo: true, seed: 1 });
    assert.ok(echo.choices[0].text.startsWith(prompt));
    const free = await client.completions.create({ prompt, max_tokens: 30, seed: 5, temperature: 0 });
    const text = free.choices[0].text;
    const cut = text.trim().slice(0, 3);
    if (cut.length > 0) {
      const stopped = await client.completions.create({ prompt, max_tokens: 30, seed: 5, temperature: 0, stop: [cut] });
      assert.equal(stopped.choices[0].text, text.slice(0, text.indexOf(cut)));
      assert.equal(stopped.choices[0].finish_reason, "stop");
    }
    const two = await client.completions.create({ prompt, max_tokens: 8, n: 2, seed: 9 });
    assert.deepEqual(two.choices.map((c) => c.index), [0, 1]);
    const lp = await client.completions.create({ prompt, max_tokens: 6, logprobs: 3, temperature: 0, ignore_eos: true });
    const l = lp.choices[0].logprobs;
    assert.equal(l.tokens.length, lp.usage.completion_tokens);
    assert.equal(l.tokens.join(""), lp.choices[0].text);
    for (let i = 0; i < l.tokens.length; i++) {
      assert.ok(l.token_logprobs[i] <= 0);
      assert.equal(Object.keys(l.top_logprobs[i]).length > 0, true);
    }
  });
});

describe("chat", () => {
  const messages = [
    { role: "system", content: "You write Rust." },
    { role: "user", content: "Write a function that adds two numbers." },
  ];
  test("answers as the assistant", async () => {
    const r = await client.chat.completions.create({ model: "nanochat-rust", messages, max_tokens: 16, seed: 2 });
    assert.equal(r.object, "chat.completion");
    assert.equal(r.choices[0].message.role, "assistant");
    assert.equal(typeof r.choices[0].message.content, "string");
    assert.ok(r.usage.completion_tokens <= 16);
  });
  test("streams deltas that add up to the whole answer", async () => {
    const whole = await client.chat.completions.create({ messages, max_tokens: 24, seed: 11 });
    const stream = await client.chat.completions.create({
      messages, max_tokens: 24, seed: 11, stream: true, stream_options: { include_usage: true },
    });
    let text = "", role = null, finish = null, usage = null;
    for await (const chunk of stream) {
      assert.equal(chunk.object, "chat.completion.chunk");
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        if (c.delta.role) role = c.delta.role;
        text += c.delta.content ?? "";
        if (c.finish_reason) finish = c.finish_reason;
      }
    }
    assert.equal(role, "assistant");
    assert.equal(text, whole.choices[0].message.content);
    assert.equal(finish, whole.choices[0].finish_reason);
    assert.equal(usage.completion_tokens, whole.usage.completion_tokens);
  });
  test("logprobs with top alternatives", async () => {
    const r = await client.chat.completions.create({
      messages, max_tokens: 5, logprobs: true, top_logprobs: 2, temperature: 0, ignore_eos: true,
    });
    const content = r.choices[0].logprobs.content;
    assert.equal(content.length, r.usage.completion_tokens);
    for (const t of content) {
      assert.equal(t.top_logprobs.length, 2);
      assert.equal(t.top_logprobs[0].logprob, t.logprob, "greedy takes the most likely token");
      assert.ok(t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob);
    }
  });
  test("text parts and unknown fields are accepted", async () => {
    const r = await client.chat.completions.create({
      messages: [{ role: "user", content: [{ type: "text", text: "fn main" }] }],
      max_tokens: 4, user: "someone", metadata_that_does_not_exist: { a: 1 },
    });
    assert.equal(r.choices.length, 1);
  });
});

describe("concurrent requests", () => {
  test("eight streams at once each give what they give alone", async () => {
    const seeds = [1, 2, 3, 4, 5, 6, 7, 8];
    const alone = [];
    for (const seed of seeds) {
      const r = await client.completions.create({ prompt, max_tokens: 32, seed, temperature: 1 });
      alone.push(r.choices[0].text);
    }
    const together = await Promise.all(seeds.map(async (seed) => {
      const stream = await client.completions.create({ prompt, max_tokens: 32, seed, temperature: 1, stream: true });
      let text = "";
      for await (const chunk of stream) for (const c of chunk.choices) text += c.text;
      return text;
    }));
    assert.deepEqual(together, alone);
  });
});

describe("errors", () => {
  const bad = async (body, param) => {
    await assert.rejects(client.completions.create({ prompt, max_tokens: 4, ...body }), (e) => {
      assert.equal(e.status, 400, JSON.stringify(body));
      assert.equal(e.type, "invalid_request_error");
      if (param) assert.equal(e.param, param);
      return true;
    });
  };
  test("wrong types and out-of-range values are 400s naming the field", async () => {
    await bad({ temperature: "hot" }, "temperature");
    await bad({ temperature: -1 }, "temperature");
    await bad({ top_p: 1.5 }, "top_p");
    await bad({ top_k: -3 }, "top_k");
    await bad({ min_p: 2 }, "min_p");
    await bad({ max_tokens: -1 }, "max_tokens");
    await bad({ max_tokens: 2.5 }, "max_tokens");
    await bad({ n: 0 }, "n");
    await bad({ stop: [""] }, "stop");
    await bad({ presence_penalty: 3 }, "presence_penalty");
    await bad({ prompt: ["one", "two"] }, "prompt");
    await bad({ prompt: [99999999] }, "prompt");
  });
  test("a prompt longer than the context is a 400", async () => {
    await assert.rejects(
      client.completions.create({ prompt: "fn a() {} ".repeat(600), max_tokens: 4 }),
      (e) => e.status === 400 && e.code === "context_length_exceeded",
    );
  });
  test("max_tokens far past the context ends at the context", async () => {
    const r = await client.completions.create({ prompt, max_tokens: 1000000, ignore_eos: true });
    assert.equal(r.choices[0].finish_reason, "length");
    // Every position of the 512-token context runs; the last one's token is sampled too.
    assert.equal(r.usage.total_tokens, 513);
  });
  test("malformed JSON, invalid UTF-8, oversized bodies and unknown paths", async () => {
    const post = (body, type = "application/json") =>
      fetch(`${server.base}/v1/completions`, { method: "POST", headers: { "Content-Type": type }, body });
    let r = await post("{\"prompt\": ");
    assert.equal(r.status, 400);
    assert.equal((await r.json()).error.type, "invalid_request_error");
    r = await post(Buffer.from([0x7b, 0x22, 0x70, 0x72, 0x6f, 0x6d, 0x70, 0x74, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]));
    assert.equal(r.status, 400, "invalid UTF-8");
    r = await post("{\"prompt\": \"x\", \"temperature\": NaN}");
    assert.equal(r.status, 400, "NaN is not JSON");
    r = await post(JSON.stringify({ prompt: "x".repeat(5 << 20) }));
    assert.equal(r.status, 413);
    assert.match((await r.json()).error.message, /max-body-bytes/);
    r = await fetch(`${server.base}/v1/embeddings`, { method: "POST", body: "{}" });
    assert.equal(r.status, 404);
    assert.match((await r.json()).error.message, /unknown path/);
  });
});

describe("api key", () => {
  test("without the right bearer token /v1/ is a 401; /health stays open", async () => {
    const locked = await startServer([], { NANOCHAT_API_KEY: "s3cret" });
    try {
      const wrong = new OpenAI({ baseURL: `${locked.base}/v1`, apiKey: "guess", maxRetries: 0 });
      await assert.rejects(wrong.models.list(), (e) => e.status === 401);
      const none = await fetch(`${locked.base}/v1/models`);
      assert.equal(none.status, 401);
      const right = new OpenAI({ baseURL: `${locked.base}/v1`, apiKey: "s3cret", maxRetries: 0 });
      const r = await right.completions.create({ prompt, max_tokens: 2 });
      assert.equal(r.choices.length, 1);
      assert.equal((await fetch(`${locked.base}/health`)).status, 200);
    } finally {
      assert.equal(await stopServer(locked), 0);
    }
  });
});
