// Tests for include/vitcuda/augment.h: normalisation statistics, resize, flip, rotation, zoom,
// random-resized-crop, the seeded pipeline and the threaded loader (bitwise the same batches as
// the synchronous path).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tests/error_of.h"
#include "vitcuda/augment.h"
#include "vitcuda/trainer.h"

using namespace vitcuda;
using vitcuda::test::error_of;

namespace {

constexpr double kPi = 3.14159265358979323846;

// n images of c x h x w with varied content; label i % classes.
Dataset pattern_dataset(int n, int c, int h, int w, int classes = 10) {
  Dataset d;
  d.name = "pattern";
  d.channels = c;
  d.height = h;
  d.width = w;
  d.num_classes = classes;
  for (int i = 0; i < n; ++i) {
    for (int k = 0; k < c * h * w; ++k) d.images.push_back(uint8_t((i * 37 + k * 11 + (k * k) % 7) % 256));
    d.labels.push_back(i % classes);
  }
  return d;
}

}  // namespace

// ---- statistics ------------------------------------------------------------------------------
TEST(ChannelStats, KnownDataset) {
  // Two 2-channel 1x2 images: channel 0 holds {0, 255, 255, 255}, channel 1 is constant 51.
  Dataset d;
  d.name = "stats";
  d.channels = 2;
  d.height = 1;
  d.width = 2;
  d.num_classes = 1;
  d.images = {0, 255, 51, 51, /* image 1 */ 255, 255, 51, 51};
  d.labels = {0, 0};
  const ChannelStats s = channel_stats(d);
  ASSERT_EQ(s.mean.size(), 2u);
  EXPECT_NEAR(s.mean[0], 0.75, 1e-7);
  EXPECT_NEAR(s.std[0], std::sqrt(0.75 * 0.25), 1e-7);  // population std of {0, 1, 1, 1}
  EXPECT_NEAR(s.mean[1], 0.2, 1e-7);
  EXPECT_FLOAT_EQ(s.std[1], 1e-7f);  // constant channel: Keras' epsilon
  Dataset empty;
  empty.name = "nothing";
  EXPECT_NE(error_of([&] { channel_stats(empty); }).find("'nothing' is empty"), std::string::npos);
}

// ---- single-image operations -----------------------------------------------------------------
TEST(Augment, HflipOf2x3) {
  const std::vector<uint8_t> src = {1, 2, 3, 4, 5, 6};
  std::vector<uint8_t> dst(6);
  hflip(src.data(), 1, 2, 3, dst.data());
  EXPECT_EQ(dst, (std::vector<uint8_t>{3, 2, 1, 6, 5, 4}));
}

TEST(Augment, ResizeOfConstantStaysConstant) {
  for (auto [h, w, oh, ow] : {std::array<int, 4>{5, 7, 72, 72}, {32, 32, 9, 13}, {1, 1, 4, 3}}) {
    std::vector<uint8_t> src(size_t(3) * h * w, 173), dst(size_t(3) * oh * ow, 0);
    resize_bilinear(src.data(), 3, h, w, dst.data(), oh, ow);
    EXPECT_TRUE(std::all_of(dst.begin(), dst.end(), [](uint8_t v) { return v == 173; })) << h << "x" << w;
  }
}

TEST(Augment, ResizeSameSizeIsIdentity) {
  Dataset d = pattern_dataset(1, 3, 6, 5);
  std::vector<uint8_t> dst(d.images.size());
  resize_bilinear(d.images.data(), 3, 6, 5, dst.data(), 6, 5);
  EXPECT_EQ(dst, d.images);
}

TEST(Augment, Bilinear2x2To4x4ByHand) {
  // Half-pixel centres: output coordinate o samples 0.5 * (o + 0.5) - 0.5 = -0.25, 0.25, 0.75,
  // 1.25, clamped at the edges: weights of the second pixel 0, 1/4, 3/4, 1.
  const std::vector<uint8_t> src = {0, 100, 200, 40};
  std::vector<uint8_t> dst(16);
  resize_bilinear(src.data(), 1, 2, 2, dst.data(), 4, 4);
  const double wt[4] = {0, 0.25, 0.75, 1};
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 4; ++x) {
      const double top = 0 * (1 - wt[x]) + 100 * wt[x], bot = 200 * (1 - wt[x]) + 40 * wt[x];
      const double v = top * (1 - wt[y]) + bot * wt[y];
      EXPECT_EQ(dst[size_t(y * 4 + x)], uint8_t(std::floor(v + 0.5))) << y << "," << x;
    }
  // Spot values written out: row 1 is 3/4 of row 0 [0 25 75 100] + 1/4 of row 3 [200 160 80 40].
  EXPECT_EQ(dst[4], 50);
  EXPECT_EQ(dst[5], 59);  // 58.75
  EXPECT_EQ(dst[6], 76);  // 76.25
  EXPECT_EQ(dst[7], 85);
  EXPECT_EQ(dst[15], 40);
}

TEST(Augment, CropResizeTakesTheCrop) {
  // 4x4 ramp; the 2x2 crop at (1, 2) resized to 2x2 is the crop itself.
  std::vector<uint8_t> src(16);
  for (int k = 0; k < 16; ++k) src[size_t(k)] = uint8_t(k * 10);
  std::vector<uint8_t> dst(4);
  crop_resize_bilinear(src.data(), 1, 4, 4, 1, 2, 2, 2, dst.data(), 2, 2);
  EXPECT_EQ(dst, (std::vector<uint8_t>{60, 70, 100, 110}));
  EXPECT_NE(error_of([&] {
              crop_resize_bilinear(src.data(), 1, 4, 4, 3, 0, 2, 2, dst.data(), 2, 2);
            }).find("not inside the 4x4 image"),
            std::string::npos);
}

TEST(Augment, RotationByZeroAndZoomOneIsIdentity) {
  Dataset d = pattern_dataset(1, 3, 9, 7);
  std::vector<uint8_t> dst(d.images.size());
  rotate_zoom(d.images.data(), 3, 9, 7, 0.0, 1.0, 1.0, dst.data());
  EXPECT_EQ(dst, d.images);
}

TEST(Augment, RotationOfCenteredSquareBy90Degrees) {
  // A centred 4x4 bright square in an 8x8 image is symmetric under a quarter turn about the
  // centre (3.5, 3.5).
  std::vector<uint8_t> src(64, 10);
  for (int y = 2; y < 6; ++y)
    for (int x = 2; x < 6; ++x) src[size_t(y * 8 + x)] = 200;
  AugmentConfig cfg;
  cfg.rotation = 0.25f;  // a full quarter turn forced below
  AugmentParams p;
  p.angle = 0.25 * 2 * kPi;
  std::vector<uint8_t> dst(64);
  augment_image(cfg, p, src.data(), 1, 8, 8, dst.data());
  EXPECT_EQ(dst, src);
}

TEST(Augment, RotationDirectionIsKerasCounterClockwise) {
  // Keras' matrix for +90°: output (x, y) samples input (cx - (y - cy), cy + (x - cx)), so the
  // input's top-right corner lands at the output's top-left (counter-clockwise on screen).
  std::vector<uint8_t> src(16, 0);
  src[3] = 255;  // (x=3, y=0)
  std::vector<uint8_t> dst(16);
  rotate_zoom(src.data(), 1, 4, 4, kPi / 2, 1, 1, dst.data());
  std::vector<uint8_t> want(16, 0);
  want[0] = 255;
  EXPECT_EQ(dst, want);
}

TEST(Augment, ZoomOutReflectsAndZoomInMagnifies) {
  // 1x5 row [0 50 100 150 200]: zoom factor 2 along x samples x_in = 2 + 2 (x - 2) =
  // -2, 0, 2, 4, 6 -> reflect (d c b a | a b c d | d c b a): -2 -> 1, 6 -> 3.
  const std::vector<uint8_t> src = {0, 50, 100, 150, 200};
  std::vector<uint8_t> dst(5);
  rotate_zoom(src.data(), 1, 1, 5, 0, 1, 2, dst.data());
  EXPECT_EQ(dst, (std::vector<uint8_t>{50, 0, 100, 200, 150}));
  // Zoom in by 0.5: x_in = 2 + (x - 2) / 2 = 1, 1.5, 2, 2.5, 3.
  rotate_zoom(src.data(), 1, 1, 5, 0, 1, 0.5, dst.data());
  EXPECT_EQ(dst, (std::vector<uint8_t>{50, 75, 100, 125, 150}));
}

TEST(Augment, RandomResizedCropBoxFollowsTorchvision) {
  const float ratio[2] = {3.f / 4, 4.f / 3};
  // Every sampled box lies inside the image with area and aspect in range (up to rounding).
  for (int i = 0; i < 200; ++i) {
    AugmentConfig cfg;
    cfg.rrc = true;
    const AugmentParams p = sample_augment(cfg, 32, 48, 7, 0, i);
    ASSERT_TRUE(p.crop);
    const CropBox& b = p.box;
    ASSERT_GE(b.top, 0);
    ASSERT_GE(b.left, 0);
    ASSERT_LE(b.top + b.height, 32);
    ASSERT_LE(b.left + b.width, 48);
    const double area = double(b.height) * b.width / (32.0 * 48.0);
    EXPECT_GT(area, 0.08 * 0.8);
    EXPECT_LE(area, 1.0);
  }
  // Scale above 1 never fits: the fallback centre crop, clamped to the ratio range.
  const float big[2] = {1.5f, 2.f};
  auto u = [] { return 0.5; };
  CropBox b = random_resized_crop_box(10, 40, big, ratio, u);  // ratio 4 > 4/3
  EXPECT_EQ(b.height, 10);
  EXPECT_EQ(b.width, 13);  // round(10 * 4/3)
  EXPECT_EQ(b.top, 0);
  EXPECT_EQ(b.left, 13);                               // (40 - 13) // 2
  b = random_resized_crop_box(40, 10, big, ratio, u);  // ratio 1/4 < 3/4
  EXPECT_EQ(b.width, 10);
  EXPECT_EQ(b.height, 13);
  EXPECT_EQ(b.top, 13);
  b = random_resized_crop_box(20, 20, big, ratio, u);
  EXPECT_EQ(b.height, 20);
  EXPECT_EQ(b.width, 20);
  // A deterministic draw sequence gives the documented formula: area fraction 0.5 of 20x20,
  // aspect exp(mid of log range) = 1 -> 14x14 (round(sqrt(200))), offsets floor(u * 7).
  b = random_resized_crop_box(20, 20, std::array<float, 2>{0.f, 1.f}.data(), ratio, u);
  EXPECT_EQ(b.height, 14);
  EXPECT_EQ(b.width, 14);
  EXPECT_EQ(b.top, 3);
  EXPECT_EQ(b.left, 3);
}

// ---- the pipeline ----------------------------------------------------------------------------
AugmentConfig keras_cifar100_config() {
  AugmentConfig c;
  c.out_height = c.out_width = 72;
  c.hflip = 0.5f;
  c.rotation = 0.02f;
  c.zoom_height = c.zoom_width = 0.2f;
  return c;
}

TEST(Augment, PipelineShapeRangeAndDeterminism) {
  Dataset d = pattern_dataset(4, 3, 32, 32);
  for (bool rrc : {false, true}) {
    AugmentConfig cfg = keras_cifar100_config();
    cfg.rrc = rrc;
    std::vector<uint8_t> a(3 * 72 * 72, 0), b(a.size(), 1), c(a.size(), 2);
    for (int i = 0; i < 4; ++i) {
      const AugmentParams p = sample_augment(cfg, 32, 32, 42, 3, i);
      const AugmentParams q = sample_augment(cfg, 32, 32, 42, 3, i);
      EXPECT_EQ(p.angle, q.angle);
      EXPECT_EQ(p.zoom_w, q.zoom_w);
      EXPECT_LE(std::abs(p.angle), 0.02 * 2 * kPi);
      EXPECT_GE(p.zoom_h, 0.8);
      EXPECT_LE(p.zoom_h, 1.2);
      augment_image(cfg, p, d.image(i), 3, 32, 32, a.data());
      augment_image(cfg, q, d.image(i), 3, 32, 32, b.data());
      EXPECT_EQ(a, b);
      // Another seed or another epoch: other draws.
      const AugmentParams r = sample_augment(cfg, 32, 32, 43, 3, i);
      const AugmentParams s = sample_augment(cfg, 32, 32, 42, 4, i);
      EXPECT_NE(p.angle, r.angle);
      EXPECT_NE(p.angle, s.angle);
      augment_image(cfg, r, d.image(i), 3, 32, 32, c.data());
      EXPECT_NE(a, c);
    }
  }
  // Flip probability: about half of many examples are flipped.
  AugmentConfig cfg;
  cfg.hflip = 0.5f;
  int flips = 0;
  for (int i = 0; i < 1000; ++i) flips += sample_augment(cfg, 8, 8, 1, 0, i).flip;
  EXPECT_GT(flips, 420);
  EXPECT_LT(flips, 580);
  // Turning zoom on leaves the rotation draws unchanged (independent streams).
  AugmentConfig r1;
  r1.rotation = 0.1f;
  AugmentConfig r2 = r1;
  r2.zoom_height = 0.3f;
  EXPECT_EQ(sample_augment(r1, 8, 8, 5, 2, 9).angle, sample_augment(r2, 8, 8, 5, 2, 9).angle);
}

TEST(Augment, ConfigValidation) {
  AugmentConfig c;
  c.hflip = 1.5f;
  EXPECT_NE(error_of([&] { c.validate(); }).find("hflip probability 1.5 must be in [0, 1]"), std::string::npos);
  c = AugmentConfig();
  c.zoom_height = 1.f;
  EXPECT_NE(error_of([&] { c.validate(); }).find("zoom factor 1 must be in [0, 1)"), std::string::npos);
  c = AugmentConfig();
  c.rrc = true;
  c.rrc_scale[0] = 0.9f;
  c.rrc_scale[1] = 0.5f;
  EXPECT_NE(error_of([&] { c.validate(); }).find("scale (0.9, 0.5)"), std::string::npos);
  EXPECT_EQ(keras_cifar100_config().describe(), "hflip 0.5, rotation 0.02, zoom 0.2");
}

// ---- the loader ------------------------------------------------------------------------------
std::vector<std::pair<std::vector<uint8_t>, std::vector<int32_t>>> run_epoch(AugmentLoader& l, int batch) {
  std::vector<std::pair<std::vector<uint8_t>, std::vector<int32_t>>> out;
  std::vector<uint8_t> img(size_t(batch) * size_t(l.image_bytes()));
  std::vector<int32_t> lab(static_cast<size_t>(batch));
  for (int n; (n = l.next(img.data(), lab.data())) > 0;)
    out.emplace_back(std::vector<uint8_t>(img.begin(), img.begin() + n * l.image_bytes()),
                     std::vector<int32_t>(lab.begin(), lab.begin() + n));
  return out;
}

TEST(AugmentLoader, ThreadedEqualsSynchronousBitwise) {
  Dataset d = pattern_dataset(45, 3, 16, 16);
  AugmentConfig cfg = keras_cifar100_config();
  cfg.out_height = cfg.out_width = 24;
  for (bool drop_last : {false, true}) {
    AugmentLoader sync(d, 8, true, drop_last, 11, cfg, /*threads=*/0);
    AugmentLoader threaded(d, 8, true, drop_last, 11, cfg, /*threads=*/3, /*queue_depth=*/2);
    ASSERT_FALSE(sync.threaded());
    ASSERT_TRUE(threaded.threaded());
    EXPECT_EQ(sync.num_batches(), drop_last ? 5 : 6);
    EXPECT_EQ(sync.image_bytes(), 3 * 24 * 24);
    for (int64_t epoch : {0, 1, 5, 1}) {  // epochs out of order: each depends only on (seed, epoch)
      sync.start_epoch(epoch);
      threaded.start_epoch(epoch);
      const auto a = run_epoch(sync, 8);
      const auto b = run_epoch(threaded, 8);
      ASSERT_EQ(a.size(), size_t(sync.num_batches()));
      EXPECT_TRUE(a == b) << "epoch " << epoch;
      if (!drop_last) {
        EXPECT_EQ(a.back().second.size(), 5u);
      }
    }
    // Abandoning an epoch half-way and starting another is clean.
    threaded.start_epoch(2);
    std::vector<uint8_t> img(8 * 3 * 24 * 24);
    std::vector<int32_t> lab(8);
    threaded.next(img.data(), lab.data());
    threaded.start_epoch(3);
    sync.start_epoch(3);
    EXPECT_TRUE(run_epoch(sync, 8) == run_epoch(threaded, 8));
  }
}

TEST(AugmentLoader, SameOrderAsBatchLoaderAndIdentityIsACopy) {
  Dataset d = pattern_dataset(20, 1, 5, 5);
  BatchLoader plain(d, 6, true, false, 3);
  AugmentLoader aug(d, 6, true, false, 3, AugmentConfig(), 2);
  EXPECT_FALSE(aug.threaded());  // identity pipeline: no workers
  plain.start_epoch(4);
  aug.start_epoch(4);
  std::vector<uint8_t> a(6 * 25), b(6 * 25);
  std::vector<int32_t> la(6), lb(6);
  for (;;) {
    const int n = plain.next(a.data(), la.data());
    ASSERT_EQ(aug.next(b.data(), lb.data()), n);
    if (n == 0) break;
    EXPECT_EQ(a, b);
    EXPECT_EQ(la, lb);
  }
  // Resize only (the evaluation pipeline) keeps order and labels.
  AugmentConfig resize;
  resize.out_height = resize.out_width = 10;
  AugmentLoader r(d, 6, false, false, 3, resize, 2);
  EXPECT_TRUE(r.threaded());
  const auto batches = run_epoch(r, 6);
  int64_t i = 0;
  for (const auto& [img, lab] : batches)
    for (size_t k = 0; k < lab.size(); ++k, ++i) {
      EXPECT_EQ(lab[k], d.labels[size_t(i)]);
      std::vector<uint8_t> want(100);
      resize_bilinear(d.image(i), 1, 5, 5, want.data(), 10, 10);
      EXPECT_TRUE(std::equal(want.begin(), want.end(), img.begin() + k * 100));
    }
  EXPECT_EQ(i, 20);
}

// ---- the trainer with augmentation -----------------------------------------------------------
// A tiny ViT on 12x12 RGB images resized to 8x8 with every augmentation on and the threaded
// loader: 1 epoch + resume + 1 epoch equals 2 uninterrupted epochs bitwise, and threads do not
// change the result.
TEST(AugmentTrainer, ResumeAndThreadsAreExact) {
  ViTConfig cfg;
  cfg.name = "tiny";
  cfg.img_size = 8;
  cfg.in_chans = 3;
  cfg.patch_size = 4;
  cfg.embed_dim = 16;
  cfg.depth = 1;
  cfg.num_heads = 2;
  cfg.num_classes = 4;
  cfg.drop_rate = 0.1f;
  const Dataset train = pattern_dataset(24, 3, 12, 12, 4);
  const Dataset val = pattern_dataset(6, 3, 12, 12, 4);
  TrainOptions o;
  o.epochs = 2;
  o.batch_size = 8;
  o.progress = false;
  o.augment = keras_cifar100_config();
  o.augment.rrc = true;
  const std::string dir = ::testing::TempDir() + "vitcuda_aug_resume_" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  auto backend = make_backend("cpu");
  auto run = [&](int threads, int stop_after, const std::string& resume) {
    Model model(cfg, *backend, o.batch_size);
    model.init(1);
    AdamW opt(model, AdamWConfig{});
    TrainOptions oo = o;
    oo.loader_threads = threads;
    oo.stop_after_epochs = stop_after;
    oo.output_dir = dir;
    Trainer t(model, opt, train, val, oo);
    if (!resume.empty()) t.resume(resume);
    std::ostringstream log;
    t.fit(log);
    return model.get_master();
  };
  const std::vector<float> sync = run(0, 0, "");
  const std::vector<float> threaded = run(3, 0, "");
  EXPECT_TRUE(sync == threaded);
  run(2, 1, "");
  const std::vector<float> resumed = run(2, 0, dir + "/last.safetensors");
  EXPECT_TRUE(sync == resumed);
  std::filesystem::remove_all(dir);
  // The channels must match; the image size need not.
  cfg.in_chans = 1;
  Model model(cfg, *backend, 8);
  AdamW opt(model, AdamWConfig{});
  EXPECT_NE(error_of([&] {
              Trainer(model, opt, train, val, o);
            }).find("has 3-channel images but model tiny expects 1-channel images"),
            std::string::npos);
}
