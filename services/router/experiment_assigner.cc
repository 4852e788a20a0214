#include "services/router/experiment_assigner.h"

#include <cmath>
#include <limits>
#include <random>

namespace switchyard::router {
namespace {

// splitmix64's finaliser: spreads FNV's low-entropy high bits.
uint64_t Mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

std::mt19937_64& Generator() {
  thread_local std::mt19937_64 generator{std::random_device{}()};
  return generator;
}

}  // namespace

uint64_t StableHash64(const std::string& bytes) {
  uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a 64
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return Mix(h);
}

int AssignArm(const std::string& experiment_id, const std::string& user_key,
              const std::vector<WeightedArm>& arms) {
  int best = -1;
  double best_score = std::numeric_limits<double>::infinity();
  std::string key = experiment_id;
  key.push_back('\0');
  key += user_key;
  key.push_back('\0');
  const size_t prefix = key.size();
  for (size_t i = 0; i < arms.size(); ++i) {
    if (!(arms[i].weight > 0)) continue;
    key.resize(prefix);
    key += arms[i].name;
    // u in (0, 1): the top 53 bits, offset by half a step so it is never 0.
    const double u = (static_cast<double>(StableHash64(key) >> 11) + 0.5) * 0x1.0p-53;
    const double score = -std::log(u) / arms[i].weight;  // Exp(weight)
    if (score < best_score) {
      best_score = score;
      best = static_cast<int>(i);
    }
  }
  return best;
}

int RandomArm(const std::vector<WeightedArm>& arms) {
  double total = 0;
  for (const WeightedArm& arm : arms) total += arm.weight > 0 ? arm.weight : 0;
  if (!(total > 0)) return -1;
  double x = UniformDraw() * total;
  int last = -1;
  for (size_t i = 0; i < arms.size(); ++i) {
    if (!(arms[i].weight > 0)) continue;
    last = static_cast<int>(i);
    if (x < arms[i].weight) return last;
    x -= arms[i].weight;
  }
  return last;  // rounding at the top end
}

double UniformDraw() { return std::uniform_real_distribution<double>(0.0, 1.0)(Generator()); }

}  // namespace switchyard::router
