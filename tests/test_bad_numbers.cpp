// Non-finite and absurd numbers (issue #13, classes 1 and 5): every numeric flag of vit_train
// and vit_infer, every ViTConfig field (validate() and from_json, config.json and checkpoint
// metadata) and every loaded tensor is finite and within its documented range (README "Input
// limits"), else exactly one "<tool>: error:" line naming the flag, field or tensor and exit
// status 1; flag errors exit 1 (not CLI11's 105/106/109) and --help exits 0; both tools refuse
// a fixed-format dataset whose channel count is not the model's.

#include "tests/cli_harness.h"
#include "tests/tiny_model.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>

#include "vitcuda/model.h"
#include "vitcuda/optim.h"
#include "vitcuda/trainer.h"

namespace fs = std::filesystem;
using namespace vitcuda;
using namespace vitcuda::cli_test;

namespace {

::testing::AssertionResult Fails(const RunResult& r, const std::vector<std::string>& needles, const std::string& tool) {
  const ::testing::AssertionResult a = CleanError(r, needles, tool);
  if (!a) return a;
  if (r.exit_code != 1) return ::testing::AssertionFailure() << "expected exit status 1: " << r.describe();
  return a;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("not a vitcuda::Error: ") + e.what();
  }
  return "<no error>";
}

// ---- ViTConfig::validate: every field's limits, no process ---------------------------------------

struct ConfigRow {
  std::string name;
  std::function<void(ViTConfig&)> change;
  std::vector<std::string> needles;  // empty: the change is valid
};

std::ostream& operator<<(std::ostream& os, const ConfigRow& r) { return os << r.name; }

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<ConfigRow> config_rows() {
  using L = ViTLimits;
  std::vector<ConfigRow> rows = {
      {"img_size_zero", [](ViTConfig& c) { c.img_size = 0; }, {"img_size", "1 to 8192", "got 0"}},
      {"img_size_huge", [](ViTConfig& c) { c.img_size = 8193 * 7; }, {"img_size", "got 57351"}},
      {"in_chans_5", [](ViTConfig& c) { c.in_chans = 5; }, {"in_chans", "got 5"}},
      {"in_chans_0", [](ViTConfig& c) { c.in_chans = 0; }, {"in_chans", "1 to 4", "got 0"}},
      {"pool_out_of_enum", [](ViTConfig& c) { c.pool = static_cast<Pool>(7); }, {"pool", "got 7"}},
      {"gelu_out_of_enum", [](ViTConfig& c) { c.gelu = static_cast<Gelu>(9); }, {"gelu", "got 9"}},
      {"patch_size_zero", [](ViTConfig& c) { c.patch_size = 0; }, {"patch_size", "got 0"}},
      {"patch_size_above_img", [](ViTConfig& c) { c.patch_size = 56; }, {"patch_size", "1 to 28", "got 56"}},
      {"too_many_patches",
       [](ViTConfig& c) {
         c.img_size = 8192;
         c.patch_size = 32;  // 256 x 256 patches
       },
       {"patch_size", "65536 patches", "16384"}},
      {"embed_dim_2pow30", [](ViTConfig& c) { c.embed_dim = 1 << 30; }, {"embed_dim", "1 to 16384", "1073741824"}},
      {"embed_dim_negative", [](ViTConfig& c) { c.embed_dim = -64; }, {"embed_dim", "got -64"}},
      {"depth_zero", [](ViTConfig& c) { c.depth = 0; }, {"depth", "got 0"}},
      {"depth_huge", [](ViTConfig& c) { c.depth = 1025; }, {"depth", "1 to 1024"}},
      {"num_heads_zero", [](ViTConfig& c) { c.num_heads = 0; }, {"num_heads", "got 0"}},
      {"num_heads_huge", [](ViTConfig& c) { c.num_heads = 2048; }, {"num_heads", "1 to 1024"}},
      {"head_dim_negative", [](ViTConfig& c) { c.head_dim = -1; }, {"head_dim", "got -1"}},
      {"head_dim_huge", [](ViTConfig& c) { c.head_dim = 16385; }, {"head_dim", "0 to 16384"}},
      {"attn_dim_huge",
       [](ViTConfig& c) {
         c.num_heads = 8;
         c.head_dim = 16384;
       },
       {"num_heads", "131072 attention channels", "65536"}},
      {"mlp_ratio_nan", [](ViTConfig& c) { c.mlp_ratio = kNaN; }, {"mlp_ratio", "got nan"}},
      {"mlp_ratio_inf", [](ViTConfig& c) { c.mlp_ratio = kInf; }, {"mlp_ratio", "got inf"}},
      {"mlp_ratio_negative", [](ViTConfig& c) { c.mlp_ratio = -2; }, {"mlp_ratio", "[0, 64]", "got -2"}},
      {"mlp_ratio_nan_with_mlp_hidden",
       [](ViTConfig& c) {
         c.mlp_hidden = 128;
         c.mlp_ratio = kNaN;
       },
       {"mlp_ratio", "got nan"}},
      {"mlp_ratio_tiny", [](ViTConfig& c) { c.mlp_ratio = 1e-4f; }, {"mlp_ratio", "gives an MLP of 0 units"}},
      {"mlp_ratio_times_dim_huge",
       [](ViTConfig& c) {
         c.embed_dim = 16384;
         c.num_heads = 16;
         c.mlp_ratio = 32;
       },
       {"mlp_ratio", "524288 units", "262144"}},
      {"mlp_hidden_negative", [](ViTConfig& c) { c.mlp_hidden = -1; }, {"mlp_hidden", "got -1"}},
      {"mlp_hidden_huge", [](ViTConfig& c) { c.mlp_hidden = L::kMlpHidden + 1; }, {"mlp_hidden", "262145"}},
      {"qk_scale_nan", [](ViTConfig& c) { c.qk_scale = kNaN; }, {"qk_scale", "got nan"}},
      {"qk_scale_inf", [](ViTConfig& c) { c.qk_scale = kInf; }, {"qk_scale", "got inf"}},
      {"qk_scale_negative", [](ViTConfig& c) { c.qk_scale = -1; }, {"qk_scale", "got -1"}},
      {"ln_eps_zero", [](ViTConfig& c) { c.ln_eps = 0; }, {"ln_eps", "(0, 1]", "got 0"}},
      {"ln_eps_nan", [](ViTConfig& c) { c.ln_eps = kNaN; }, {"ln_eps", "got nan"}},
      {"ln_eps_huge", [](ViTConfig& c) { c.ln_eps = 2; }, {"ln_eps", "got 2"}},
      {"drop_rate_nan", [](ViTConfig& c) { c.drop_rate = kNaN; }, {"drop_rate", "[0, 1)", "got nan"}},
      {"drop_rate_one", [](ViTConfig& c) { c.drop_rate = 1; }, {"drop_rate", "got 1"}},
      {"attn_drop_rate_inf", [](ViTConfig& c) { c.attn_drop_rate = kInf; }, {"attn_drop_rate", "got inf"}},
      {"drop_path_rate_negative", [](ViTConfig& c) { c.drop_path_rate = -0.1f; }, {"drop_path_rate", "got -0.1"}},
      {"head_drop_rate_nan", [](ViTConfig& c) { c.head_drop_rate = kNaN; }, {"head_drop_rate", "got nan"}},
      {"pre_logits_negative", [](ViTConfig& c) { c.pre_logits = -1; }, {"pre_logits", "got -1"}},
      {"pre_logits_huge", [](ViTConfig& c) { c.pre_logits = L::kHeadWidth + 1; }, {"pre_logits", "0 to 65536"}},
      {"head_mlp_zero",
       [](ViTConfig& c) {
         c.head_mlp = {64, 0};
       },
       {"head_mlp", "got 0"}},
      {"head_mlp_huge", [](ViTConfig& c) { c.head_mlp = {1 << 20}; }, {"head_mlp", "1 to 65536"}},
      {"head_mlp_too_many", [](ViTConfig& c) { c.head_mlp.assign(17, 8); }, {"head_mlp", "17 layers", "16"}},
      {"num_classes_zero", [](ViTConfig& c) { c.num_classes = 0; }, {"num_classes", "got 0"}},
      {"num_classes_2e9", [](ViTConfig& c) { c.num_classes = 2000000000; }, {"num_classes", "1 to 1048576"}},
      {"pixel_mean_nan", [](ViTConfig& c) { c.pixel_mean[0] = kNaN; }, {"pixel_mean", "[0, 1]", "got nan"}},
      {"pixel_mean_1e30", [](ViTConfig& c) { c.pixel_mean[0] = 1e30f; }, {"pixel_mean", "got 1e+30"}},
      {"pixel_mean_negative", [](ViTConfig& c) { c.pixel_mean[0] = -0.5f; }, {"pixel_mean", "got -0.5"}},
      {"pixel_std_inf", [](ViTConfig& c) { c.pixel_std[0] = kInf; }, {"pixel_std", "got inf"}},
      {"pixel_std_zero", [](ViTConfig& c) { c.pixel_std[0] = 0; }, {"pixel_std", "got 0"}},
      {"pixel_std_huge", [](ViTConfig& c) { c.pixel_std[0] = 1e4f; }, {"pixel_std", "1000", "got 10000"}},
      {"pixel_std_second_channel",
       [](ViTConfig& c) {
         c.in_chans = 3;
         c.pixel_std[1] = kNaN;
       },
       {"pixel_std", "got nan"}},
      {"too_many_parameters",
       [](ViTConfig& c) {
         c.embed_dim = 16384;
         c.num_heads = 16;
         c.depth = 1024;
       },
       {"size", "parameters, more than 8589934592"}},
      {"flatten_head_too_many_parameters",
       [](ViTConfig& c) {
         c.img_size = 512;
         c.patch_size = 4;
         c.embed_dim = 1024;
         c.num_heads = 16;
         c.class_token = false;
         c.pool = Pool::Flatten;
         c.head_mlp = {65536};
       },
       {"size", "more than 8589934592"}},
      // The limits are generous: these pass.
      {"pixel_channels_beyond_in_chans_ignored", [](ViTConfig& c) { c.pixel_std[3] = kNaN; }, {}},
      {"boundaries",
       [](ViTConfig& c) {
         c.pixel_mean[0] = 1;
         c.pixel_std[0] = ViTLimits::kPixelStdMin;
         c.drop_rate = 0.999f;
         c.qk_scale = 100;
         c.ln_eps = 1;
         c.mlp_hidden = 1;
         c.mlp_ratio = 0;
         c.pre_logits = 7;
         c.head_mlp = {5, 3};
       },
       {}},
      {"vit_huge_patch14_518_21k",
       [](ViTConfig& c) {
         c = preset("vit_huge_patch14_224");
         c.img_size = 518;
         c.num_classes = 21843;
       },
       {}},
      {"wide_6144_depth_12",
       [](ViTConfig& c) {
         c.img_size = 224;
         c.patch_size = 14;
         c.embed_dim = 6144;
         c.num_heads = 48;
         c.depth = 12;
         c.mlp_hidden = 24576;
       },
       {}},
  };
  for (const std::string& name : preset_names())
    rows.push_back({"preset_" + name, [name](ViTConfig& c) { c = preset(name); }, {}});
  return rows;
}

class ConfigLimits : public ::testing::TestWithParam<ConfigRow> {};

TEST_P(ConfigLimits, Validate) {
  const ConfigRow& row = GetParam();
  ViTConfig c = preset("vit_fmnist");
  row.change(c);
  const std::string e = error_of([&] { c.validate(); });
  if (row.needles.empty()) {
    EXPECT_EQ(e, "<no error>");
    return;
  }
  EXPECT_EQ(e.rfind("invalid model config: ", 0), 0u) << e;
  for (const std::string& n : row.needles) EXPECT_NE(e.find(n), std::string::npos) << "'" << n << "' not in: " << e;
}

INSTANTIATE_TEST_SUITE_P(BadNumbers, ConfigLimits, ::testing::ValuesIn(config_rows()),
                         [](const auto& info) { return info.param.name; });

// Derived sizes of an unvalidated config are defined: no float-to-int overflow.
TEST(BadNumbersConfig, MlpHiddenDimOfAbsurdRatios) {
  ViTConfig c = preset("vit_fmnist");
  for (float r : {kNaN, kInf, -2.f, 1e30f}) {
    c.mlp_ratio = r;
    EXPECT_EQ(c.mlp_hidden_dim(), -1) << r;
  }
  c.mlp_ratio = 2.f;
  EXPECT_EQ(c.mlp_hidden_dim(), 128);
  c.embed_dim = 1 << 30;
  EXPECT_EQ(c.mlp_hidden_dim(), -1);
  const std::string e = error_of([&] { c.validate(); });
  EXPECT_NE(e.find("embed_dim must be 1 to 16384, got 1073741824"), std::string::npos) << e;
}

// The 64-bit count is the model's own.
TEST(BadNumbersConfig, ParamCountIsTheModels) {
  auto backend = make_backend("cpu");
  std::vector<ViTConfig> configs = {preset("vit_fmnist")};
  ViTConfig c = preset("vit_fmnist");
  c.img_size = 12;
  c.patch_size = 4;
  c.embed_dim = 8;
  c.depth = 2;
  c.num_heads = 2;
  c.class_token = false;
  c.pool = Pool::Flatten;
  c.qkv_bias = false;
  c.head_mlp = {6, 5};
  c.pre_logits = 3;
  c.mlp_hidden = 12;
  configs.push_back(c);
  c.pool = Pool::Avg;
  c.head_dim = 3;
  c.head_mlp.clear();
  c.pre_logits = 0;
  configs.push_back(c);
  for (const ViTConfig& cfg : configs) {
    Model m(cfg, *backend, 1);
    EXPECT_EQ(cfg.param_count(), m.num_params()) << cfg.to_json();
  }
}

// ---- ViTConfig::from_json: types and float range, naming the field ------------------------------

struct JsonRow {
  std::string name, json;
  std::vector<std::string> needles;
};
std::ostream& operator<<(std::ostream& os, const JsonRow& r) { return os << r.name; }

std::vector<JsonRow> json_rows() {
  return {
      {"pixel_std_1e39", R"({"pixel_std": [1e39]})", {"pixel_std[0]", "1e+39", "float range"}},
      {"pixel_std_second_1e39", R"({"in_chans": 3, "pixel_std": [0.5, 1e39, 0.5]})", {"pixel_std[1]"}},
      {"pixel_mean_five_values", R"({"pixel_mean": [0, 0, 0, 0, 0]})", {"pixel_mean", "5 values", "at most 4"}},
      {"pixel_mean_string", R"({"pixel_mean": "0.5"})", {"pixel_mean", "wrong type"}},
      {"pixel_mean_1e30", R"({"pixel_mean": [1e30]})", {"pixel_mean", "[0, 1]", "1e+30"}},
      {"mlp_ratio_1e39", R"({"mlp_ratio": 1e39})", {"mlp_ratio", "float range"}},
      {"qk_scale_1e400", R"({"qk_scale": 1e400})", {"JSON is invalid", "1e400"}},  // refused by the parser
      {"ln_eps_negative", R"({"ln_eps": -1e-6})", {"ln_eps", "(0, 1]"}},
      {"depth_3e9", R"({"depth": 3000000000})", {"depth", "out of range", "3000000000"}},
      {"depth_minus_3e9", R"({"depth": -3000000000})", {"depth", "out of range"}},
      {"depth_2_5", R"({"depth": 2.5})", {"depth", "must be an integer", "2.5"}},
      {"depth_string", R"({"depth": "six"})", {"depth", "wrong type"}},
      {"depth_null", R"({"depth": null})", {"depth", "wrong type"}},
      {"embed_dim_2pow30", R"({"embed_dim": 1073741824})", {"embed_dim", "1 to 16384"}},
      {"num_classes_2e9", R"({"num_classes": 2000000000})", {"num_classes", "1 to 1048576"}},
      {"qkv_bias_number", R"({"qkv_bias": 1})", {"qkv_bias", "wrong type"}},
      {"name_number", R"({"name": 5})", {"name", "wrong type"}},
      {"head_mlp_float", R"({"head_mlp": [64.5]})", {"head_mlp[0]", "integer"}},
      {"head_mlp_17", R"({"head_mlp": [1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]})", {"head_mlp", "17 values"}},
      {"drop_rate_1e300", R"({"drop_rate": 1e300})", {"drop_rate", "float range"}},
      {"global_pool_empty", R"({"global_pool": ""})", {"global_pool"}},
      {"unknown_field", R"({"embed_dimm": 128})", {"unknown field 'embed_dimm'"}},
  };
}

class ConfigJson : public ::testing::TestWithParam<JsonRow> {};

TEST_P(ConfigJson, FromJson) {
  const std::string e = error_of([&] { ViTConfig::from_json(GetParam().json); });
  ASSERT_NE(e, "<no error>");
  for (const std::string& n : GetParam().needles)
    EXPECT_NE(e.find(n), std::string::npos) << "'" << n << "' not in: " << e;
}

INSTANTIATE_TEST_SUITE_P(BadNumbers, ConfigJson, ::testing::ValuesIn(json_rows()),
                         [](const auto& info) { return info.param.name; });

TEST(BadNumbersConfig, FromJsonKeepsGoodConfigs) {
  // Integral floats are integers; every preset round-trips.
  EXPECT_EQ(ViTConfig::from_json(R"({"depth": 3.0})").depth, 3);
  for (const std::string& name : preset_names()) {
    const ViTConfig c = preset(name);
    EXPECT_EQ(ViTConfig::from_json(c.to_json()).to_json(), c.to_json()) << name;
  }
}

// ---- the tools' flags: a table of (tool, flags, needles) -----------------------------------------

struct FlagRow {
  std::string tool;  // "vit_train" or "vit_infer"
  Flags flags;       // overrides of the tool's good command line; a value "A B" is two arguments
  std::vector<std::string> needles;
  int exit_code = 1;  // 0: accepted (vit_train rows add --summary to stop before training)
};

std::string row_name(const FlagRow& r, size_t index) {
  std::string n = r.tool + "_" + std::to_string(index);
  for (const auto& [flag, value] : r.flags) n += "_" + flag + "_" + value;
  std::string out;
  for (char c : n) out += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return out;
}
std::ostream& operator<<(std::ostream& os, const FlagRow& r) {
  os << r.tool;
  for (const auto& [flag, value] : r.flags) os << " " << flag << " " << value;
  return os;
}

// Each value of `bad` for each flag: refused, naming the flag and the value.
void add_bad(std::vector<FlagRow>& rows, const std::string& tool, const std::string& flag,
             const std::vector<std::string>& bad, const std::string& name_in_error = "") {
  for (const std::string& v : bad) {
    // "--scale nan 1": the error names the first value's text.
    const std::string shown = v.substr(0, v.find(' '));
    rows.push_back({tool, {{flag, v}}, {name_in_error.empty() ? flag : name_in_error, shown}});
  }
}

std::vector<FlagRow> flag_rows() {
  std::vector<FlagRow> rows;
  const std::vector<std::string> nonfinite = {"nan", "NaN", "inf", "-inf", "1e300", "abc", "", "1.5x", " 1"};
  const std::vector<std::string> int_junk = {
      "nan", "inf", "-inf", "1e300", "abc", "1e3", "2.5", "0x10", "99999999999999999999999", "true"};
  // vit_train float flags: the junk, then values out of range.
  const std::vector<std::pair<std::string, std::vector<std::string>>> train_floats = {
      {"--hflip", {"-0.1", "1.5"}},
      {"--rotation", {"-1", "2"}},
      {"--zoom", {"-0.5", "1"}},
      {"--scale", {"0 1", "-1 1", "nan 1", "inf 1"}},
      {"--mean", {"-0.1", "1.01", "1e30"}},
      {"--std", {"0", "-1", "1e-4", "1e39", "2000"}},
      {"--val-split", {"-0.1", "0.95", "1"}},
      {"--lr", {"0", "-0.001", "1e-50", "1001", "1e39"}},
      {"--min-lr", {"-1e-5", "1e4"}},
      {"--weight-decay", {"-0.05", "101"}},
      {"--warmup-epochs", {"-1", "100001"}},
      {"--clip-grad", {"-1", "1e7"}},
      {"--smoothing", {"-0.1", "1", "1.5"}},
      {"--drop", {"-0.1", "1", "2"}},
      {"--drop-path", {"-0.1", "1"}},
      {"--distill-alpha", {"-0.1", "1.01", "2"}},
      {"--distill-tau", {"0", "-1", "1001", "1e39"}},
  };
  for (const auto& [flag, out_of_range] : train_floats) {
    std::vector<std::string> bad = out_of_range;
    for (const std::string& v : nonfinite) bad.push_back(flag == "--scale" ? v + " 1" : v);
    add_bad(rows, "vit_train", flag, bad);
  }
  // --scale's second value.
  for (const char* hi : {"1.5", "nan", "inf", "0", "x"})
    rows.push_back({"vit_train", {{"--scale", std::string("0.5 ") + hi}}, {"--scale", hi}});
  // vit_train integer flags (-b's error names --batch-size).
  const std::vector<std::tuple<std::string, std::string, std::vector<std::string>>> train_ints = {
      {"-b", "--batch-size", {"0", "-1", "65537"}},
      {"--epochs", "", {"0", "-2", "100001"}},
      {"--loader-threads", "", {"-1", "65"}},
      {"--seed", "", {"-1", "18446744073709551616"}},
      {"--img-size", "", {"0", "-28", "8193", "2147483648"}},
      {"--patch-size", "", {"0", "8193"}},
      {"--num-heads", "", {"0", "1025"}},
      {"--embed-dim", "", {"0", "16385", "1073741824"}},
      {"--depth", "", {"0", "1025"}},
      {"--num-classes", "", {"0", "2000000000"}},
      {"--pre-logits", "", {"-1", "65537"}},
      {"--log-interval", "", {"0", "-5", "1000001"}},
      {"--stop-after-epochs", "", {"-1", "100001"}},
  };
  for (const auto& [flag, name, out_of_range] : train_ints) {
    std::vector<std::string> bad = out_of_range;
    bad.insert(bad.end(), int_junk.begin(), int_junk.end());
    add_bad(rows, "vit_train", flag, bad, name);
  }
  // vit_infer's numeric flags.
  add_bad(rows, "vit_infer", "--topk", {"0", "-1", "1001", "nan", "inf", "1e300", "abc", "2.5", "1e3"});
  add_bad(rows, "vit_infer", "-b", {"0", "65537", "nan", "-inf", "1e300", "abc"}, "--batch-size");
  // Relations between flags: refused, not clamped.
  rows.push_back({"vit_train", {{"--lr", "0.001"}, {"--min-lr", "0.01"}}, {"--min-lr", "0.01", "above --lr 0.001"}});
  rows.push_back({"vit_train", {{"--warmup-epochs", "3"}}, {"--warmup-epochs", "3", "above --epochs 2"}});
  rows.push_back({"vit_train", {{"--warmup-epochs", "2.5"}}, {"--warmup-epochs", "2.5", "above --epochs 2"}});
  rows.push_back({"vit_train", {{"--rrc", ""}, {"--scale", "0.9 0.5"}}, {"--scale", "above HI 0.5, got 0.9"}});
  // Accepted: boundaries, and a default --min-lr above a small --lr (it follows --lr down).
  for (const Flags& good : std::vector<Flags>{{{"--lr", "1e-6"}},
                                              {{"--lr", "0.001"}, {"--min-lr", "0.001"}},
                                              {{"--warmup-epochs", "2"}},
                                              {{"--hflip", "1"}, {"--rotation", "0"}, {"--zoom", "0.999"}},
                                              {{"--rrc", ""}, {"--scale", "0.5 0.5"}, {"--smoothing", "0.999"}},
                                              {{"--seed", "18446744073709551615"}, {"--val-split", "0.9"}},
                                              {{"--mean", "1"}, {"--std", "0.001"}},
                                              {{"--drop", "0"}, {"--drop-path", "0.5"}, {"--clip-grad", "1e6"}},
                                              {{"--img-size", "+28"}, {"--num-classes", "1048576"}}})
    rows.push_back({"vit_train", good, {}, 0});
  return rows;
}

class FlagTable : public CliTest, public ::testing::WithParamInterface<FlagRow> {};

// The row's flags split into arguments ("0.5 1" is two).
Args row_args(const Flags& base, const Flags& overrides) {
  Args out;
  for (const std::string& a : with(base, overrides)) {
    if (a.find(' ') == std::string::npos || a.find(' ') == 0) {
      out.push_back(a);
      continue;
    }
    std::istringstream in(a);
    for (std::string part; in >> part;) out.push_back(part);
  }
  return out;
}

TEST_P(FlagTable, Refused) {
  const FlagRow& row = GetParam();
  RunResult r;
  if (row.tool == "vit_train") {
    Flags f = row.flags;
    if (row.exit_code == 0) f.push_back({"--summary", ""});
    r = run(row_args(tiny_flags(), f));
  } else {
    // A missing image: a flag error must come first.
    r = run_vit_infer(row_args({{"-c", (data_dir() / "no.safetensors").string()}, {"--no-progress", ""}}, row.flags),
                      dir_);
  }
  if (row.exit_code == 0) {
    EXPECT_EQ(r.exit_code, 0) << r.describe();
    return;
  }
  EXPECT_TRUE(Fails(r, row.needles, row.tool));
}

INSTANTIATE_TEST_SUITE_P(BadNumbers, FlagTable, ::testing::ValuesIn(flag_rows()),
                         [](const auto& info) { return row_name(info.param, info.index); });

// ---- the library: TrainOptions and AdamWConfig refuse what the tools' flags refuse ---------------

// Each row breaks one field of a good TrainOptions / AdamWConfig; the Trainer or AdamW
// constructor must throw naming the field (a NaN passes `x >= 0` style checks that forget it).
TEST(BadNumbersLibrary, TrainOptionsAndAdamWConfig) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const Dataset train = test::tiny_dataset(16, 1), val;
  const ViTConfig cfg = test::tiny_config();
  auto backend = make_backend("cpu");
  Model model(cfg, *backend, 8);
  using Edit = std::function<void(TrainOptions&, AdamWConfig&)>;
  const std::vector<std::tuple<std::string, Edit>> rows = {
      {"lr", [&](TrainOptions& o, AdamWConfig&) { o.lr = nan; }},
      {"lr", [&](TrainOptions& o, AdamWConfig&) { o.lr = inf; }},
      {"lr", [&](TrainOptions& o, AdamWConfig&) { o.lr = 0; }},
      {"min_lr", [&](TrainOptions& o, AdamWConfig&) { o.min_lr = nan; }},
      {"min_lr", [&](TrainOptions& o, AdamWConfig&) { o.min_lr = 2 * o.lr; }},
      {"warmup_epochs", [&](TrainOptions& o, AdamWConfig&) { o.warmup_epochs = inf; }},
      {"warmup_epochs", [&](TrainOptions& o, AdamWConfig&) { o.warmup_epochs = 1e30f; }},
      {"warmup_epochs", [&](TrainOptions& o, AdamWConfig&) { o.warmup_epochs = -1; }},
      {"smoothing", [&](TrainOptions& o, AdamWConfig&) { o.smoothing = nan; }},
      {"smoothing", [&](TrainOptions& o, AdamWConfig&) { o.smoothing = 1; }},
      {"log_interval", [&](TrainOptions& o, AdamWConfig&) { o.log_interval = 0; }},
      {"loader_threads", [&](TrainOptions& o, AdamWConfig&) { o.loader_threads = -1; }},
      {"epochs", [&](TrainOptions& o, AdamWConfig&) { o.epochs = 0; }},
      {"hflip", [&](TrainOptions& o, AdamWConfig&) { o.augment.hflip = nan; }},
      {"AdamW: lr", [&](TrainOptions&, AdamWConfig& a) { a.lr = inf; }},
      {"weight_decay", [&](TrainOptions&, AdamWConfig& a) { a.weight_decay = nan; }},
      {"weight_decay", [&](TrainOptions&, AdamWConfig& a) { a.weight_decay = inf; }},
      {"beta1", [&](TrainOptions&, AdamWConfig& a) { a.beta1 = nan; }},
      {"beta2", [&](TrainOptions&, AdamWConfig& a) { a.beta2 = 1; }},
      {"eps", [&](TrainOptions&, AdamWConfig& a) { a.eps = 0; }},
      {"eps", [&](TrainOptions&, AdamWConfig& a) { a.eps = nan; }},
      {"clip_grad", [&](TrainOptions&, AdamWConfig& a) { a.clip_grad = inf; }},
  };
  auto attempt = [&](const Edit& edit) -> std::string {
    TrainOptions o;
    o.batch_size = 8;
    o.progress = false;
    AdamWConfig ac;
    edit(o, ac);
    try {
      AdamW opt(model, ac);
      Trainer t(model, opt, train, val, o);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(attempt([](TrainOptions&, AdamWConfig&) {}), "") << "the good options must be accepted";
  for (const auto& [field, edit] : rows) {
    const std::string err = attempt(edit);
    EXPECT_NE(err.find(field), std::string::npos) << "expected an error naming " << field << ", got '" << err << "'";
  }
}

using BadNumbersCli = CliTest;

// ---- exit statuses: 1 for every flag error, 0 for --help ----------------------------------------

TEST_F(BadNumbersCli, ExitStatuses) {
  for (const char* tool : {"vit_train", "vit_infer"}) {
    const char* exe = std::string(tool) == "vit_train" ? kVitTrain : kVitInfer;
    const RunResult help = run_tool(exe, {"--help"}, dir_);
    EXPECT_EQ(help.exit_code, 0) << help.describe();
    EXPECT_NE(help.out.find("--batch-size"), std::string::npos) << help.describe();
    // Unknown flag (CLI11: 109), a value missing (CLI11: 107?), a bad member (105).
    for (const Args& a : std::vector<Args>{{"--bogus"}, {"-b"}, {"--device", "tpu"}, {"--batch-size", "x"}}) {
      const RunResult r = run_tool(exe, a, dir_);
      EXPECT_TRUE(Fails(r, {}, tool)) << a[0];
    }
  }
  // vit_infer without the required --checkpoint (CLI11: 106).
  EXPECT_TRUE(Fails(run_vit_infer({"x.png"}, dir_), {"--checkpoint"}, "vit_infer"));
}

// ---- checkpoints: bad 'config' metadata, non-finite tensors ---------------------------------------

class BadCheckpoint : public CliTest {
 protected:
  // good_checkpoint() with `edit` applied, written to dir_/name.
  fs::path edited(const std::string& name, const std::function<void(SafeTensorsFile&)>& edit) {
    SafeTensorsFile f = load_safetensors(good_checkpoint().string());
    edit(f);
    const fs::path p = dir_ / name;
    save_safetensors(p.string(), f);
    return p;
  }
  static void set_f32(SafeTensorsFile& f, const std::string& tensor, int64_t index, float value) {
    SafeTensor& t = f.tensors.at(tensor);
    ASSERT_EQ(t.dtype, DType::F32);
    ASSERT_LT(index, t.numel());
    std::memcpy(t.bytes.data() + index * 4, &value, 4);
  }
  static void set_config(SafeTensorsFile& f, const std::string& key, const nlohmann::json& value) {
    nlohmann::json j = nlohmann::json::parse(f.metadata.at("config"));
    j[key] = value;
    f.metadata["config"] = j.dump();
  }
  RunResult infer(const fs::path& ckpt) {
    // The checkpoint is refused before the (missing) image is read.
    return run_vit_infer({"-c", ckpt.string(), (dir_ / "missing.png").string(), "--no-progress"}, dir_);
  }
};

TEST_F(BadCheckpoint, NonFiniteWeightRefusedByBothTools) {
  for (const auto& [tensor, index, value, shown] :
       {std::tuple<const char*, int64_t, float, const char*>{"blocks.0.mlp.fc1.weight", 5, kNaN, "nan at index 5"},
        {"pos_embed", 0, kInf, "inf at index 0"},
        {"head.bias", 9, -kInf, "-inf at index 9"}}) {
    const fs::path p = edited("bad_weight.safetensors", [&](SafeTensorsFile& f) { set_f32(f, tensor, index, value); });
    const std::vector<std::string> needles = {p.string(), std::string("'") + tensor + "'", "non-finite", shown};
    EXPECT_TRUE(Fails(infer(p), needles, "vit_infer")) << tensor;
    EXPECT_TRUE(Fails(run(with(tiny_flags(), {{"--resume", p.string()}})), needles, "vit_train")) << tensor;
    EXPECT_TRUE(Fails(run(with(tiny_flags(), {{"--initial-checkpoint", p.string()}})), needles, "vit_train")) << tensor;
  }
}

TEST_F(BadCheckpoint, NonFiniteBf16WeightRefused) {
  // A timm-style bf16 tensor holding +inf (0x7f80) is refused after the conversion to fp32.
  const fs::path p = edited("bf16.safetensors", [](SafeTensorsFile& f) {
    SafeTensor& t = f.tensors.at("head.bias");
    std::vector<uint8_t> b(size_t(t.numel()) * 2, 0);
    b[2 * 3 + 1] = 0x7f;
    b[2 * 3] = 0x80;
    t.dtype = DType::BF16;
    t.bytes = b;
  });
  EXPECT_TRUE(Fails(infer(p), {p.string(), "'head.bias'", "inf at index 3"}, "vit_infer"));
}

TEST_F(BadCheckpoint, NonFiniteOptimizerMomentRefusedByResume) {
  for (const auto& [tensor, value, shown] :
       {std::tuple<const char*, float, const char*>{"optimizer.exp_avg.patch_embed.proj.weight", kNaN, "nan"},
        {"optimizer.exp_avg_sq.head.weight", kInf, "inf"}}) {
    const fs::path p = edited("bad_moment.safetensors", [&](SafeTensorsFile& f) { set_f32(f, tensor, 1, value); });
    EXPECT_TRUE(Fails(run(with(tiny_flags(), {{"--resume", p.string()}})),
                      {p.string(), std::string("'") + tensor + "'", "non-finite", shown}, "vit_train"))
        << tensor;
  }
}

TEST_F(BadCheckpoint, BadOptimizerStepsRefusedByResume) {
  for (const char* steps : {"-3", "12abc", "1e300", "", "99999999999999999999"}) {
    const fs::path p =
        edited("bad_steps.safetensors", [&](SafeTensorsFile& f) { f.metadata["optimizer.steps"] = steps; });
    EXPECT_TRUE(Fails(run(with(tiny_flags(), {{"--resume", p.string()}})),
                      {p.string(), "'optimizer.steps'", std::string("'") + steps + "'"}, "vit_train"))
        << steps;
  }
}

// The trainer state of a checkpoint: whole numbers in range, best_top1 an accuracy or -1, the
// best epoch one of the epochs done (std::stoi read "1abc" as 1 and std::stod took nan).
TEST_F(BadCheckpoint, BadTrainerStateRefusedByResume) {
  const std::vector<std::pair<std::string, std::string>> rows = {
      {"epoch", "1abc"},     {"epoch", "-1"},       {"epoch", " 1"},      {"epoch", "100001"},    {"step", "x"},
      {"step", "1e3"},       {"best_top1", "nan"},  {"best_top1", "inf"}, {"best_top1", "1e300"}, {"best_top1", "1.5"},
      {"best_top1", "-0.5"}, {"best_top1", "0.5x"}, {"best_top1", ""},    {"best_epoch", "2"},    {"best_epoch", "-1"},
  };
  for (const auto& [key, value] : rows) {
    const fs::path p = edited("bad_state.safetensors", [&](SafeTensorsFile& f) { f.metadata[key] = value; });
    EXPECT_TRUE(Fails(run(with(tiny_flags(), {{"--resume", p.string()}})), {p.string(), "'" + key + "'"}, "vit_train"))
        << key << " = '" << value << "'";
  }
}

TEST_F(BadCheckpoint, BadConfigMetadataRefusedByVitInfer) {
  const std::vector<std::tuple<std::string, nlohmann::json, std::vector<std::string>>> rows = {
      {"pixel_std", nlohmann::json::parse("[1e39]"), {"pixel_std[0]", "1e+39"}},
      {"pixel_std", nlohmann::json::array({0.0}), {"pixel_std", "got 0"}},
      {"pixel_mean", nlohmann::json::array({1e30}), {"pixel_mean", "1e+30"}},
      {"embed_dim", 1 << 30, {"embed_dim", "1 to 16384"}},
      {"num_classes", 2000000000, {"num_classes", "1 to 1048576"}},
      {"mlp_ratio", 1e39, {"mlp_ratio", "float range"}},
      {"ln_eps", 0.0, {"ln_eps", "got 0"}},
      {"depth", 3000000000ll, {"depth", "out of range"}},
      {"drop_path_rate", 1.5, {"drop_path_rate", "got 1.5"}},
  };
  for (const auto& [key, value, needles] : rows) {
    const fs::path p = edited("bad_config.safetensors", [&](SafeTensorsFile& f) { set_config(f, key, value); });
    std::vector<std::string> all = {p.string(), "metadata 'config' is invalid"};
    all.insert(all.end(), needles.begin(), needles.end());
    EXPECT_TRUE(Fails(infer(p), all, "vit_infer")) << key << " = " << value.dump();
  }
}

// ---- the channel rule: both tools refuse a fixed-format dataset of another channel count ---------

TEST_F(BadNumbersCli, ChannelRuleInBothTools) {
  // A tiny CIFAR-10 (3-channel 32x32) for the 1-channel tiny model.
  const fs::path d = dir_ / "cifar";
  fs::create_directories(d);
  std::vector<uint8_t> records;
  for (int i = 0; i < 8; ++i) {
    records.push_back(uint8_t(i % 10));
    for (int k = 0; k < 3072; ++k) records.push_back(uint8_t((i * 31 + k) & 255));
  }
  for (const char* f : {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
                        "data_batch_5.bin", "test_batch.bin"})
    write_bytes(d / f, records);
  const std::vector<std::string> needles = {"has 3-channel images but model", "expects 1-channel images"};
  EXPECT_TRUE(
      Fails(run(with(tiny_flags(), {{"--dataset", "cifar10"}, {"--data-dir", d.string()}})), needles, "vit_train"));
  EXPECT_TRUE(Fails(
      run_vit_infer(
          {"-c", good_checkpoint().string(), "--dataset", "cifar10", "--data-dir", d.string(), "--no-progress"}, dir_),
      needles, "vit_infer"));
  // The same model's own 1-channel data still evaluates (resizing is allowed, channels are not converted).
  const RunResult ok = run_vit_infer(
      {"-c", good_checkpoint().string(), "--dataset", "mnist", "--data-dir", data_dir().string(), "--no-progress"},
      dir_);
  EXPECT_EQ(ok.exit_code, 0) << ok.describe();
}

}  // namespace
