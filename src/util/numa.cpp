#include "nanochat/util/numa.hpp"

#if NANOCHAT_HAVE_NUMA
#include <numa.h>
#endif

namespace nanochat {

int numa_node_count() {
#if NANOCHAT_HAVE_NUMA
  if (numa_available() < 0) return 1;
  const int nodes = numa_num_configured_nodes();
  return nodes > 0 ? nodes : 1;
#else
  return 1;
#endif
}

bool numa_placement_available() { return numa_node_count() > 1; }

bool numa_bind_pages(void* ptr, std::size_t bytes, int node) {
#if NANOCHAT_HAVE_NUMA
  if (node < 0 || !numa_placement_available() || node >= numa_node_count()) return false;
  numa_tonode_memory(ptr, bytes, node);
  return true;
#else
  (void)ptr;
  (void)bytes;
  (void)node;
  return false;
#endif
}

}  // namespace nanochat
