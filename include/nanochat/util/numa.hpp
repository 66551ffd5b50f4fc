// NUMA placement through libnuma when the build found it and the machine has more than one node;
// otherwise every call falls back cleanly (one node, plain allocation).
#pragma once

#include <cstddef>

namespace nanochat {

// Number of configured NUMA nodes; 1 without libnuma or on a single-node machine.
int numa_node_count();

// True when memory can be bound to a node (libnuma present and more than one node).
bool numa_placement_available();

// Moves the pages of [ptr, ptr + bytes) to `node`. No-op when placement is unavailable or
// node < 0. Returns false if the kernel refused.
bool numa_bind_pages(void* ptr, std::size_t bytes, int node);

}  // namespace nanochat
