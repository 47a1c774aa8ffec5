// vitcuda tests — a fresh folder per test under GoogleTest's TempDir, removed afterwards.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

namespace vitcuda::test {

class ScratchDirTest : public ::testing::Test {
 protected:
  // `tag` keeps the folders of different suites apart: TempDir/vitcuda_<tag>_<test>_<pid>.
  explicit ScratchDirTest(std::string tag) : tag_(std::move(tag)) {}
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = ::testing::TempDir() + "vitcuda_" + tag_ + "_" + info->name() + "_" + std::to_string(::getpid());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }

  std::string dir_;

 private:
  std::string tag_;
};

}  // namespace vitcuda::test
