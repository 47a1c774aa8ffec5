// Tests for include/vitcuda/{metrics,inspect,image,pictures,report}.h: confusion matrix and per-class accuracy,
// attention rollout against hand computations and against softmax(q·kᵀ) of a real forward pass, the patch-grid
// picture's layout and pixels, image resizing and channel conversion, PNG round trips, the end-of-training report, and
// tools/plot_history.py.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "vitcuda/augment.h"
#include "vitcuda/backend.h"
#include "vitcuda/model.h"
#include "vitcuda/image.h"
#include "vitcuda/inspect.h"
#include "vitcuda/metrics.h"
#include "vitcuda/pictures.h"
#include "vitcuda/report.h"

namespace fs = std::filesystem;
using namespace vitcuda;

namespace {

fs::path temp_dir(const std::string& tag) {
  fs::path d = fs::temp_directory_path() / ("vitcuda_vis_" + tag + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string read_text(const fs::path& p) {
  std::ifstream f(p);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// python3 on the PATH, else Debian's /usr/bin/python3, when it has matplotlib; "" otherwise.
std::string matplotlib_python() {
  for (const char* p : {"python3", "/usr/bin/python3"})
    if (std::system((std::string(p) + " -c 'import matplotlib' >/dev/null 2>&1").c_str()) == 0) return p;
  return "";
}

// labels / predictions of 9 images over 4 classes (class 3 has no images).
const std::vector<int32_t> kLabels{0, 0, 0, 1, 1, 2, 2, 2, 2};
const std::vector<int32_t> kPreds{0, 1, 0, 1, 1, 2, 0, 2, 2};

}  // namespace

// ---- confusion matrix ----------------------------------------------------------------------
TEST(ConfusionMatrix, CountsAndPerClassAccuracy) {
  const ConfusionMatrix cm = confusion_matrix(kLabels, kPreds, 4);
  EXPECT_EQ(cm.at(0, 0), 2);
  EXPECT_EQ(cm.at(0, 1), 1);
  EXPECT_EQ(cm.at(1, 1), 2);
  EXPECT_EQ(cm.at(2, 2), 3);
  EXPECT_EQ(cm.at(2, 0), 1);
  EXPECT_EQ(cm.total(), 9);
  EXPECT_EQ(cm.support(0), 3);
  EXPECT_EQ(cm.support(3), 0);
  EXPECT_NEAR(cm.accuracy(), 7.0 / 9, 1e-12);
  EXPECT_NEAR(cm.class_accuracy(0), 2.0 / 3, 1e-12);
  EXPECT_NEAR(cm.class_accuracy(1), 1.0, 1e-12);
  EXPECT_NEAR(cm.class_accuracy(2), 0.75, 1e-12);
  EXPECT_TRUE(std::isnan(cm.class_accuracy(3)));
}

TEST(ConfusionMatrix, Csv) {
  const ConfusionMatrix cm = confusion_matrix(kLabels, kPreds, 4);
  EXPECT_EQ(cm.to_csv({"cat", "dog", "bird, small", "fish"}),
            "true\\pred,cat,dog,\"bird, small\",fish\n"
            "cat,2,1,0,0\n"
            "dog,0,2,0,0\n"
            "\"bird, small\",1,0,3,0\n"
            "fish,0,0,0,0\n");
  EXPECT_EQ(cm.per_class_csv(),
            "class,name,support,correct,accuracy\n"
            "0,0,3,2,0.666667\n"
            "1,1,2,2,1.000000\n"
            "2,2,4,3,0.750000\n"
            "3,3,0,0,\n");
}

TEST(ConfusionMatrix, RejectsBadInput) {
  EXPECT_THROW(confusion_matrix({0, 1}, {0}, 2), Error);
  try {
    confusion_matrix({0, 5}, {0, 1}, 3);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("outside [0, 3)"), std::string::npos) << e.what();
  }
}

// ---- attention rollout -----------------------------------------------------------------------
TEST(AttentionRollout, IdentityAndUniformAttention) {
  const int H = 2, T = 5;
  std::vector<float> eye(size_t(H) * T * T, 0.f), uniform(size_t(H) * T * T, 1.f / T);
  for (int h = 0; h < H; ++h)
    for (int i = 0; i < T; ++i) eye[(size_t(h) * T + i) * T + i] = 1.f;
  // Identity attention: every token keeps to itself; the cls token sees no patch.
  for (float v : attention_rollout({eye, eye}, H, T, true)) EXPECT_FLOAT_EQ(v, 0.f);
  // Without a cls token: the mean over the rows of I is 1/T everywhere.
  for (float v : attention_rollout({eye}, H, T, false)) EXPECT_FLOAT_EQ(v, 1.f / T);
  // Uniform attention, one layer: (U + I) / 2, so the cls row gives each patch 1/(2T).
  const std::vector<float> u = attention_rollout({uniform}, H, T, true);
  ASSERT_EQ(u.size(), size_t(T - 1));
  for (float v : u) EXPECT_FLOAT_EQ(v, 0.5f / T);
}

TEST(AttentionRollout, MatchesHandComputation) {
  // Two heads, three tokens (cls + 2 patches).
  const std::vector<float> P{0.5f, 0.25f, 0.25f, 0.f,  1.f,  0.f, 0.2f, 0.3f, 0.5f,  // head 0
                             0.1f, 0.6f,  0.3f,  0.5f, 0.5f, 0.f, 0.f,  0.f,  1.f};  // head 1
  // mean over heads = [[.3 .425 .275] [.25 .75 0] [.1 .15 .75]]; Â = (mean + I) / 2 =
  // [[.65 .2125 .1375] [.125 .875 0] [.05 .075 .875]].
  std::vector<float> one = attention_rollout({P}, 2, 3, true);
  ASSERT_EQ(one.size(), 2u);
  EXPECT_NEAR(one[0], 0.2125, 1e-6);
  EXPECT_NEAR(one[1], 0.1375, 1e-6);
  // Two layers: the cls row of Â·Â.
  std::vector<float> two = attention_rollout({P, P}, 2, 3, true);
  EXPECT_NEAR(two[0], 0.65 * 0.2125 + 0.2125 * 0.875 + 0.1375 * 0.075, 1e-6);
  EXPECT_NEAR(two[1], 0.65 * 0.1375 + 0.2125 * 0.0 + 0.1375 * 0.875, 1e-6);
  // No cls token: the mean of each column of Â.
  std::vector<float> avg = attention_rollout({P}, 2, 3, false);
  ASSERT_EQ(avg.size(), 3u);
  EXPECT_NEAR(avg[0], (0.65 + 0.125 + 0.05) / 3, 1e-6);
  EXPECT_NEAR(avg[1], (0.2125 + 0.875 + 0.075) / 3, 1e-6);
  EXPECT_NEAR(avg[2], (0.1375 + 0.0 + 0.875) / 3, 1e-6);
  EXPECT_THROW(attention_rollout({P}, 2, 4, true), Error);
}

namespace {
ViTConfig tiny_config(bool cls) {
  ViTConfig c;
  c.img_size = 8;
  c.in_chans = 1;
  c.patch_size = 4;
  c.embed_dim = 8;
  c.depth = 2;
  c.num_heads = 2;
  c.mlp_ratio = 2.f;
  c.num_classes = 3;
  c.class_token = cls;
  c.pool = cls ? Pool::Token : Pool::Avg;
  return c;
}
}  // namespace

// P from the saved logsumexp equals softmax(scale · q kᵀ) recomputed here from q and k.
TEST(AttentionRollout, FromAForwardPass) {
  for (bool cls : {true, false}) {
    auto be = make_backend("cpu");
    const ViTConfig c = tiny_config(cls);
    Model model(c, *be, 2);
    model.init(7);
    std::vector<uint8_t> img(2 * 64);
    for (size_t i = 0; i < img.size(); ++i) img[i] = uint8_t(i * 37 % 256);
    model.forward(Tensor::view(img.data(), {2, 1, 8, 8}, DType::U8), false);
    const int T = c.num_tokens(), H = c.num_heads, d = c.attn_head_dim();
    std::vector<std::vector<float>> layers;
    for (int l = 0; l < c.depth; ++l) {
      const std::vector<float> P = attention_probs(model, l, 1);
      ASSERT_EQ(P.size(), size_t(H) * T * T);
      // The packed projection [B, T, 3, H, d]: q and k of image 1, head h, read here by hand.
      const std::vector<float> qkv = to_host_f32(*be, model.activation("blocks." + std::to_string(l) + ".qkv"));
      auto at = [&](int s, int h, int t, int e) {
        return double(qkv[(((size_t(1) * T + t) * 3 + s) * H + h) * d + e]);
      };
      for (int h = 0; h < H; ++h)
        for (int i = 0; i < T; ++i) {
          std::vector<double> s(T);
          double mx = -1e300, sum = 0, row = 0;
          for (int j = 0; j < T; ++j) {
            double dot = 0;
            for (int e = 0; e < d; ++e) dot += at(0, h, i, e) * at(1, h, j, e);
            s[j] = dot * c.attn_scale();
            mx = std::max(mx, s[j]);
          }
          for (int j = 0; j < T; ++j) sum += std::exp(s[j] - mx);
          for (int j = 0; j < T; ++j) {
            const float p = P[(size_t(h) * T + i) * T + j];
            EXPECT_NEAR(p, std::exp(s[j] - mx) / sum, 1e-5);
            row += p;
          }
          EXPECT_NEAR(row, 1.0, 1e-5);
        }
      layers.push_back(P);
    }
    const std::vector<float> map = attention_rollout(model, 1);
    ASSERT_EQ(map.size(), size_t(c.num_patches()));
    const std::vector<float> ref = attention_rollout(layers, H, T, cls);
    for (size_t i = 0; i < map.size(); ++i) EXPECT_FLOAT_EQ(map[i], ref[i]);
    EXPECT_THROW(attention_rollout(model, 2), Error);  // the last batch had 2 images
    // Predictions and probabilities of the same forward.
    const std::vector<float> prob = last_probabilities(model);
    const std::vector<int32_t> pred = last_predictions(model);
    ASSERT_EQ(prob.size(), 6u);
    ASSERT_EQ(pred.size(), 2u);
    for (int b = 0; b < 2; ++b) {
      EXPECT_NEAR(prob[b * 3] + prob[b * 3 + 1] + prob[b * 3 + 2], 1.0, 1e-5);
      for (int k = 0; k < 3; ++k) EXPECT_LE(prob[b * 3 + k], prob[b * 3 + pred[b]]);
    }
  }
}

// ---- images ------------------------------------------------------------------------------------
TEST(Images, PatchGridLayoutAndPixels) {
  // A 6x4 grey image, pixel (x, y) = 10 * y + x + 1; patch 2, scale 3, gap 2.
  const int H = 4, W = 6;
  std::vector<uint8_t> chw(H * W);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) chw[y * W + x] = uint8_t(10 * y + x + 1);
  const Image img = patch_grid_image(chw.data(), 1, H, W, 2, 3, 2);
  // original 18x12 at (2, 2); grid 3x2 patches of 6x6 with 2-pixel gaps from x = 3*2 + 18 = 24
  EXPECT_EQ(img.channels, 3);
  EXPECT_EQ(img.width, 24 + 3 * 6 + 2 * 2 + 2);
  EXPECT_EQ(img.height, 2 + (2 * 6 + 2) + 2);
  auto px = [&](int x, int y) { return int(img.at(x, y)[0]); };
  EXPECT_EQ(px(0, 0), 255);  // margin
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      EXPECT_EQ(px(2 + 3 * x, 2 + 3 * y), 10 * y + x + 1);
      EXPECT_EQ(px(2 + 3 * x + 2, 2 + 3 * y + 2), 10 * y + x + 1);  // nearest-neighbour block
    }
  // Patch (px 1, py 1) starts at (24 + 8, 2 + 8) and shows pixel (2, 2); its last pixel (3, 3).
  EXPECT_EQ(px(32, 10), 23);
  EXPECT_EQ(px(32 + 5, 10 + 5), 34);
  EXPECT_EQ(px(24 + 6, 2), 255);     // the gap between patch 0 and patch 1
  EXPECT_EQ(px(24, 2 + 6), 255);     // the gap between the patch rows
  EXPECT_EQ(img.at(32, 10)[1], 23);  // grey replicated to RGB
  EXPECT_EQ(img.at(32, 10)[2], 23);

  // RGB input keeps its colours.
  std::vector<uint8_t> rgb(3 * 4 * 4);
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < 16; ++i) rgb[c * 16 + i] = uint8_t(50 * c + i);
  const Image im3 = patch_grid_image(rgb.data(), 3, 4, 4, 2, 1, 1);
  const PatchGridLayout L = patch_grid_layout(4, 4, 2, 1, 1);
  EXPECT_EQ(im3.width, L.width);
  EXPECT_EQ(L.grid_x0, 3 + 4);
  // patch (1, 0) top-left shows pixel (2, 0): channel c = 50c + 2
  const uint8_t* p = im3.at(L.grid_x0 + 2 + 1, 1);
  EXPECT_EQ(p[0], 2);
  EXPECT_EQ(p[1], 52);
  EXPECT_EQ(p[2], 102);
  EXPECT_THROW(patch_grid_image(chw.data(), 1, H, W, 4), Error);  // 4 does not tile 6
}

TEST(Images, ResizeAndChannels) {
  Image row(4, 1, 1);
  row.pixels = {0, 100, 200, 255};
  const Image half = resize_bilinear(row, 2, 1);  // half-pixel centres: averages of pairs
  EXPECT_EQ(half.pixels, (std::vector<uint8_t>{50, 228}));
  Image flat(3, 5, 3, 77);
  for (uint8_t v : resize_bilinear(flat, 7, 2).pixels) EXPECT_EQ(v, 77);
  Image rgb(1, 1, 3);
  rgb.pixels = {10, 20, 30};
  EXPECT_EQ(convert_channels(rgb, 1).pixels, (std::vector<uint8_t>{18}));  // BT.601 luma
  Image g(1, 1, 1);
  g.pixels = {9};
  EXPECT_EQ(convert_channels(g, 3).pixels, (std::vector<uint8_t>{9, 9, 9}));
  EXPECT_EQ(convert_channels(g, 4).pixels, (std::vector<uint8_t>{9, 9, 9, 255}));
  // model_input: grey 2x2 -> 3 channels 4x4, CHW
  ViTConfig c;
  c.img_size = 4;
  c.patch_size = 2;
  c.in_chans = 3;
  Image sq(2, 2, 1, 60);
  const std::vector<uint8_t> chw = model_input(sq, c);
  ASSERT_EQ(chw.size(), 3u * 16);
  for (uint8_t v : chw) EXPECT_EQ(v, 60);
  const Image back = image_from_chw(chw.data(), 3, 4, 4);
  EXPECT_EQ(image_to_chw(back), chw);
}

// Inference (model_input) resizes exactly as the training loader does: the same pixels as
// augment.h's planar resize_bilinear, up and down, for every channel count.
TEST(Images, ResizeIsTheLoaderResize) {
  uint64_t state = 12345;
  for (int ch : {1, 3, 4}) {
    Image img(13, 9, ch);
    for (uint8_t& v : img.pixels) v = uint8_t((state = state * 6364136223846793005ull + 1442695040888963407ull) >> 56);
    const std::vector<uint8_t> chw = image_to_chw(img);
    for (const auto& [w, h] : std::vector<std::pair<int, int>>{{28, 20}, {5, 4}, {13, 30}, {1, 1}}) {
      std::vector<uint8_t> want(size_t(ch) * h * w);
      resize_bilinear(chw.data(), ch, img.height, img.width, want.data(), h, w);
      EXPECT_EQ(resize_bilinear(img, w, h).pixels, image_from_chw(want.data(), ch, h, w).pixels)
          << ch << " channels to " << w << "x" << h;
    }
  }
  try {
    resize_bilinear(Image(2, 2, 1), 0, 3);
    ADD_FAILURE() << "no error for a 0x3 target";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "resize_bilinear: target size must be positive");
  }
}

TEST(Images, PngRoundTripAndErrors) {
  if (!png_supported()) GTEST_SKIP() << "built without stb (libstb-dev)";
  const fs::path dir = temp_dir("png");
  for (int ch : {1, 3, 4}) {
    Image img(5, 3, ch);
    for (size_t i = 0; i < img.pixels.size(); ++i) img.pixels[i] = uint8_t(i * 13);
    const std::string path = (dir / ("x" + std::to_string(ch) + ".png")).string();
    write_png(path, img);
    std::ifstream f(path, std::ios::binary);
    char sig[8];
    f.read(sig, 8);
    EXPECT_EQ(std::string(sig, 8), std::string("\x89PNG\r\n\x1a\n", 8));
    const Image back = load_image(path);
    EXPECT_EQ(back.width, 5);
    EXPECT_EQ(back.height, 3);
    EXPECT_EQ(back.channels, ch);
    EXPECT_EQ(back.pixels, img.pixels);
  }
  try {
    load_image((dir / "missing.png").string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot read image"), std::string::npos) << e.what();
  }
  std::ofstream(dir / "junk.png") << "this is not a PNG";
  try {
    load_image((dir / "junk.png").string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot decode image"), std::string::npos) << e.what();
  }
  EXPECT_THROW(write_png((dir / "no" / "such" / "dir.png").string(), Image(2, 2, 3)), Error);
  fs::remove_all(dir);
}

TEST(Images, ConfusionMatrixAndAttentionPictures) {
  const ConfusionMatrix cm = confusion_matrix(kLabels, kPreds, 4);
  const Image m = confusion_matrix_image(cm, 10);
  const int border = 1;  // max(1, 10 / 8)
  EXPECT_EQ(m.width, 4 * 10 + 2 * border);
  uint8_t want[3];
  colormap(1.f, want);  // class 1: all correct
  EXPECT_EQ(m.at(border + 1 * 10 + 5, border + 1 * 10 + 5)[0], want[0]);
  colormap(0.f, want);
  EXPECT_EQ(m.at(border + 3 * 10 + 5, border + 1 * 10 + 5)[1], want[1]);
  EXPECT_EQ(m.at(border + 5, border + 3 * 10 + 5)[0], 160);  // class 3 has no images: grey

  std::vector<uint8_t> chw(16, 100);
  const Image a = attention_overlay(chw.data(), 1, 4, 4, {0.f, 1.f, 0.f, 0.f}, 2, 2, 1);
  EXPECT_EQ(a.width, 4 * 1 + 3 * 8);
  EXPECT_EQ(a.height, 2 * 1 + 8);
  colormap(1.f, want);
  const uint8_t* hot = a.at(1 + 8 + 1 + 7, 1);  // heat panel, top-right corner: the max cell
  EXPECT_EQ(hot[0], want[0]);
  EXPECT_EQ(hot[2], want[2]);
  EXPECT_EQ(a.at(1, 1)[0], 100);  // the image panel
  EXPECT_THROW(attention_overlay(chw.data(), 1, 4, 4, {1.f}, 2), Error);
}

TEST(Report, WritesCsvAndPngs) {
  auto be = make_backend("cpu");
  const ViTConfig c = tiny_config(true);
  Model model(c, *be, 4);
  model.init(3);
  Dataset d;
  d.name = "tiny";
  d.channels = 1;
  d.height = d.width = 8;
  d.num_classes = 3;
  d.labels = {0, 1, 2, 1};
  d.images.resize(4 * 64);
  for (size_t i = 0; i < d.images.size(); ++i) d.images[i] = uint8_t(i * 7);
  const fs::path dir = temp_dir("report");
  const auto files = write_test_report(dir.string(), model, d, {0, 1, 1, 1}, {"a", "b", "c"}, 2);
  EXPECT_EQ(read_text(dir / "confusion_matrix.csv"), "true\\pred,a,b,c\na,1,0,0\nb,0,2,0\nc,0,1,0\n");
  EXPECT_EQ(read_text(dir / "per_class_accuracy.csv"),
            "class,name,support,correct,accuracy\n0,a,1,1,1.000000\n1,b,2,2,1.000000\n2,c,1,0,0.000000\n");
  if (!png_supported()) {
    EXPECT_EQ(files.size(), 2u);
    return;
  }
  EXPECT_EQ(files.size(), 5u);
  const Image p = load_image((dir / "patches.png").string());
  const PatchGridLayout L = patch_grid_layout(8, 8, 4, 0, 4);
  EXPECT_EQ(p.width, L.width);
  EXPECT_EQ(p.height, L.height);
  EXPECT_EQ(p.at(L.gap, L.gap)[0], d.image(2)[0]);  // image 2's first pixel
  const Image a = load_image((dir / "attention.png").string());
  EXPECT_EQ(a.width, 4 * 4 + 3 * 8 * L.scale);
  EXPECT_GT(load_image((dir / "confusion_matrix.png").string()).width, 0);
  EXPECT_THROW(write_test_report(dir.string(), model, d, {0, 1, 1, 1}, {}, 9), Error);
  fs::remove_all(dir);
}

// ---- tools/plot_history.py -------------------------------------------------------------------
TEST(PlotHistory, WritesCurvesPng) {
  const std::string python = matplotlib_python();
  if (python.empty()) GTEST_SKIP() << "python3 with matplotlib is not installed (apt-get install python3-matplotlib)";
  const fs::path dir = temp_dir("plot");
  std::ofstream(dir / "history.csv")
      << "epoch,train_loss,train_top1,val_loss,val_top1,val_top5,lr,seconds,images_per_second,train_top5\n"
         "1,1.20,0.55,1.00,0.62,0.95,1.0e-03,3.0,900.0,0.90\n"
         "2,0.90,0.68,0.85,0.70,0.97,8.0e-04,3.0,910.0,0.95\n"
         "3,0.75,0.74,0.80,0.73,0.98,2.0e-04,3.0,905.0,0.97\n";
  const std::string cmd = python + " " + VITCUDA_SOURCE_DIR + "/tools/plot_history.py " + dir.string() + " > " +
                          (dir / "log.txt").string() + " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << read_text(dir / "log.txt");
  ASSERT_TRUE(fs::exists(dir / "curves.png")) << read_text(dir / "log.txt");
  if (png_supported()) {
    EXPECT_GT(load_image((dir / "curves.png").string()).width, 100);
  }
  // A missing file: one error line and a non-zero exit.
  const std::string bad = python + " " + VITCUDA_SOURCE_DIR + "/tools/plot_history.py " + (dir / "nothing").string() +
                          " > " + (dir / "log2.txt").string() + " 2>&1";
  EXPECT_NE(std::system(bad.c_str()), 0);
  EXPECT_NE(read_text(dir / "log2.txt").find("plot_history: error:"), std::string::npos);
  fs::remove_all(dir);
}
