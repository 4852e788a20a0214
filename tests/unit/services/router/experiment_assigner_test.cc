#include "services/router/experiment_assigner.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace switchyard::router {
namespace {

// Share of the keys user-0 .. user-(n-1) that `AssignArm` sends to each arm.
std::vector<double> KeySplit(const std::string& experiment_id, const std::vector<WeightedArm>& arms,
                             int n) {
  std::vector<double> share(arms.size(), 0);
  for (int k = 0; k < n; ++k) {
    const int arm = AssignArm(experiment_id, absl::StrCat("user-", k), arms);
    EXPECT_GE(arm, 0);
    if (arm >= 0) share[arm] += 1.0 / n;
  }
  return share;
}

// Arm index per key user-0 .. user-(n-1).
std::vector<int> Assignments(const std::string& experiment_id, const std::vector<WeightedArm>& arms,
                             int n) {
  std::vector<int> out;
  out.reserve(n);
  for (int k = 0; k < n; ++k)
    out.push_back(AssignArm(experiment_id, absl::StrCat("user-", k), arms));
  return out;
}

TEST(ExperimentAssignerTest, SplitOf70To30HoldsWithin3PointsOver2000Keys) {
  const std::vector<WeightedArm> arms = {{"control", 70}, {"candidate", 30}};
  const std::vector<double> share = KeySplit("exp-split", arms, 2000);
  std::printf("70/30 over 2000 keys: %.2f%% / %.2f%%\n", 100 * share[0], 100 * share[1]);
  EXPECT_NEAR(share[0], 0.70, 0.03);
  EXPECT_NEAR(share[1], 0.30, 0.03);
}

TEST(ExperimentAssignerTest, SameKeyGetsSameArmEveryTime) {
  const std::vector<WeightedArm> arms = {{"a", 1}, {"b", 1}, {"c", 2}};
  const std::vector<int> first = Assignments("exp-sticky", arms, 300);
  for (int round = 0; round < 5; ++round) {
    // A fresh copy of the arms: nothing may depend on object identity.
    const std::vector<WeightedArm> copy = arms;
    EXPECT_EQ(Assignments("exp-sticky", copy, 300), first) << "round " << round;
  }
}

TEST(ExperimentAssignerTest, ArmOrderDoesNotChangeWhichArmAKeyGets) {
  // The score of an arm depends on its name, not its position.
  const std::vector<WeightedArm> forward = {{"a", 50}, {"b", 30}, {"c", 20}};
  const std::vector<WeightedArm> backward = {{"c", 20}, {"b", 30}, {"a", 50}};
  for (int k = 0; k < 500; ++k) {
    const std::string key = absl::StrCat("user-", k);
    const int f = AssignArm("exp-order", key, forward);
    const int b = AssignArm("exp-order", key, backward);
    ASSERT_GE(f, 0);
    ASSERT_GE(b, 0);
    EXPECT_EQ(forward[f].name, backward[b].name) << key;
  }
}

TEST(ExperimentAssignerTest, ThreeArms50To30To20HoldWithin3PointsOver5000Keys) {
  const std::vector<WeightedArm> arms = {{"a", 0.5}, {"b", 0.3}, {"c", 0.2}};
  const std::vector<double> share = KeySplit("exp-three", arms, 5000);
  std::printf("50/30/20 over 5000 keys: %.2f%% / %.2f%% / %.2f%%\n", 100 * share[0], 100 * share[1],
              100 * share[2]);
  EXPECT_NEAR(share[0], 0.50, 0.03);
  EXPECT_NEAR(share[1], 0.30, 0.03);
  EXPECT_NEAR(share[2], 0.20, 0.03);
}

TEST(ExperimentAssignerTest, ZeroWeightArmIsNeverChosen) {
  const std::vector<WeightedArm> arms = {{"a", 1}, {"off", 0}, {"c", 1}};
  for (int k = 0; k < 2000; ++k) {
    EXPECT_NE(AssignArm("exp-zero", absl::StrCat("user-", k), arms), 1);
  }
  for (int i = 0; i < 2000; ++i) EXPECT_NE(RandomArm(arms), 1);
  // The only positive arm takes everything.
  const std::vector<WeightedArm> one = {{"off", 0}, {"on", 0.1}, {"off2", 0}};
  for (int k = 0; k < 200; ++k) {
    EXPECT_EQ(AssignArm("exp-zero", absl::StrCat("user-", k), one), 1);
    EXPECT_EQ(RandomArm(one), 1);
  }
}

TEST(ExperimentAssignerTest, NoPositiveWeightGivesMinusOne) {
  const std::vector<WeightedArm> zeros = {{"a", 0}, {"b", 0}};
  EXPECT_EQ(AssignArm("exp", "user-1", zeros), -1);
  EXPECT_EQ(RandomArm(zeros), -1);
  EXPECT_EQ(AssignArm("exp", "user-1", {}), -1);
  EXPECT_EQ(RandomArm({}), -1);
}

TEST(ExperimentAssignerTest, Ramp70To30Into50To50MovesOnlyFromShrinkingArmAndAbout20Percent) {
  const int n = 5000;
  const std::vector<int> before = Assignments("exp-ramp", {{"a", 70}, {"b", 30}}, n);
  const std::vector<int> after = Assignments("exp-ramp", {{"a", 50}, {"b", 50}}, n);
  int moved = 0;
  for (int k = 0; k < n; ++k) {
    if (before[k] == after[k]) continue;
    ++moved;
    // a's weight fell, b's rose: no key may leave b.
    EXPECT_EQ(before[k], 0) << "user-" << k << " left the rising arm";
    EXPECT_EQ(after[k], 1) << "user-" << k;
  }
  const double fraction = static_cast<double>(moved) / n;
  std::printf("ramp 70/30 -> 50/50: %.2f%% of %d keys moved (minimum 20%%)\n", 100 * fraction, n);
  EXPECT_NEAR(fraction, 0.20, 0.03);
}

TEST(ExperimentAssignerTest, RaisingOneOfThreeArmsMovesKeysOnlyIntoIt) {
  const int n = 5000;
  const std::vector<int> before = Assignments("exp-raise", {{"a", 50}, {"b", 30}, {"c", 20}}, n);
  const std::vector<int> after = Assignments("exp-raise", {{"a", 50}, {"b", 30}, {"c", 40}}, n);
  int moved = 0;
  for (int k = 0; k < n; ++k) {
    if (before[k] == after[k]) continue;
    ++moved;
    EXPECT_EQ(after[k], 2) << "user-" << k << " moved from " << before[k] << " to " << after[k];
  }
  // c's share goes from 20/100 to 40/120: a third minus a fifth of the keys move.
  const double fraction = static_cast<double>(moved) / n;
  std::printf("raise c 20 -> 40 of 50/30/20: %.2f%% moved (minimum 13.33%%)\n", 100 * fraction);
  EXPECT_NEAR(fraction, 40.0 / 120 - 0.2, 0.03);
}

TEST(ExperimentAssignerTest, DifferentExperimentIdsAssignIndependently) {
  const int n = 5000;
  const std::vector<WeightedArm> arms = {{"control", 70}, {"candidate", 30}};
  const std::vector<int> x = Assignments("exp-x", arms, n);
  const std::vector<int> y = Assignments("exp-y", arms, n);
  int x_control = 0, y_control = 0, agree = 0;
  for (int k = 0; k < n; ++k) {
    x_control += x[k] == 0;
    y_control += y[k] == 0;
    agree += x[k] == y[k];
  }
  const double agreement = static_cast<double>(agree) / n;
  std::printf("exp-x %.2f%% / exp-y %.2f%% control; agreement %.2f%% (chance 58%%)\n",
              100.0 * x_control / n, 100.0 * y_control / n, 100 * agreement);
  EXPECT_NEAR(static_cast<double>(x_control) / n, 0.70, 0.03);
  EXPECT_NEAR(static_cast<double>(y_control) / n, 0.70, 0.03);
  // Independent 70/30 draws agree with probability 0.7^2 + 0.3^2 = 0.58.
  EXPECT_NEAR(agreement, 0.58, 0.03);
}

TEST(ExperimentAssignerTest, StableHash64KeepsItsPinnedValues) {
  // Computed once from the implementation: assignments are stored nowhere, so
  // a change to the hash would silently move every user to another arm.
  EXPECT_EQ(StableHash64(""), 0xf52a15e9a9b5e89bULL);
  EXPECT_EQ(StableHash64("a"), 0x02c0bdbf481420f8ULL);
  EXPECT_EQ(StableHash64("switchyard"), 0x6aa81a58fb52b661ULL);
  // Embedded NULs (the separators of AssignArm's key) are hashed too.
  EXPECT_NE(StableHash64(std::string("exp\0user", 8)), StableHash64("exp"));
}

TEST(ExperimentAssignerTest, RandomArmProportionsHoldWithin3PointsOver20000Draws) {
  const std::vector<WeightedArm> arms = {{"a", 0.5}, {"off", 0}, {"b", 0.3}, {"c", 0.2}};
  std::vector<int> counts(arms.size(), 0);
  const int draws = 20000;
  for (int i = 0; i < draws; ++i) {
    const int arm = RandomArm(arms);
    ASSERT_GE(arm, 0);
    ASSERT_LT(arm, static_cast<int>(arms.size()));
    ++counts[arm];
  }
  std::printf("RandomArm 50/0/30/20 over %d draws: %.2f%% / %.2f%% / %.2f%% / %.2f%%\n", draws,
              100.0 * counts[0] / draws, 100.0 * counts[1] / draws, 100.0 * counts[2] / draws,
              100.0 * counts[3] / draws);
  EXPECT_NEAR(static_cast<double>(counts[0]) / draws, 0.50, 0.03);
  EXPECT_EQ(counts[1], 0);
  EXPECT_NEAR(static_cast<double>(counts[2]) / draws, 0.30, 0.03);
  EXPECT_NEAR(static_cast<double>(counts[3]) / draws, 0.20, 0.03);
}

TEST(ExperimentAssignerTest, UniformDrawStaysInUnitInterval) {
  double sum = 0;
  for (int i = 0; i < 10000; ++i) {
    const double u = UniformDraw();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
  }
  EXPECT_NEAR(sum / 10000, 0.5, 0.03);
}

}  // namespace
}  // namespace switchyard::router
