// NANOCHAT_CLONES: compile a function once per x86-64 level (v4: AVX-512, v3: AVX2 + FMA, and the
// baseline) and let the loader pick the widest the CPU runs. Used for small float loops that the
// compiler vectorizes well; the kernels proper have their own translation units per ISA.
//
// Under ThreadSanitizer the loader's resolver would run before the sanitizer is set up (and
// crash), so those builds get the baseline version only.
#pragma once

#if defined(__SANITIZE_THREAD__)
#define NANOCHAT_NO_CLONES 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define NANOCHAT_NO_CLONES 1
#endif
#endif

#if defined(NANOCHAT_NO_CLONES)
#define NANOCHAT_CLONES
#else
#define NANOCHAT_CLONES [[gnu::target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")]]
#endif
