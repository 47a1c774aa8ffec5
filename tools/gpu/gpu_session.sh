#!/usr/bin/env bash
# The one script a session with a lent GPU machine runs there, in one `run` call, with
# third_party/ carried (made here by tools/gpu/offline_deps.sh; the machine has no Debian -dev
# packages and no network; cmake/Dependencies.cmake falls back to third_party/):
#
#   run(command="bash tools/gpu/gpu_session.sh quick", carry=["third_party"], timeout_s=420)
#   run(command="bash tools/gpu/gpu_session.sh full",  carry=["third_party"], timeout_s=600)
#   run(command="bash tools/gpu/gpu_session.sh step",  carry=["third_party"], timeout_s=600)
#
# Modes:
#   quick     configure, build vitcuda_kernel_tests_cuda only, run it: proves the build (~5 min
#             at most). Uses the same build folder and settings as full, so a full call on the
#             still-warm machine reuses what quick compiled.
#   full      configure (Release, CUDA archs "80;90a", cuDNN from the pip wheel), build the kernel
#             tests, vit_train and every native bench_* binary (BUILD_ALL=1: everything), then,
#             each step time-boxed and allowed to fail without stopping the rest:
#               nvidia-smi; vitcuda_kernel_tests_cuda (gtest XML); tools/sanitize.sh (time-boxed:
#               the complete run is the sanitize mode); every native bench_* (JSON);
#               vit_train --device cuda on Fashion-MNIST with the default settings (then a
#               distilled student taught by it, 2 epochs); the
#               side-by-side (below) in the last STEP_BENCH_S seconds of the budget, kept for it;
#               a one-epoch vit_train --device cpu for comparison when time is left; the summary.
#   step      configure, build bench_step only, then the side-by-side with the whole budget
#             (every torch.compile run that fits). Run it after quick on the warm machine.
#   The side-by-side: bench_step (whole training and inference steps of vit_fmnist B128,
#             vit_keras_cifar100 B256, vit_small/base_patch16_224 B128; JSON), then
#             bench/torch_step.py with the venv's python (PyTorch eager, then torch.compile, small
#             models first, the same batches, bf16 autocast, fused AdamW; MFU against bench_step's
#             measured bf16 GEMM peak; runs that would not fit the time box are skipped and listed,
#             ViT-B's compile first), then step_ratio.md: vitcuda img/s against both per model.
#   sanitize  tools/sanitize.sh on the whole kernel test suite, with the whole time budget.
#
# Everything lands in $OUT (default ./out; the run tool sets it), at most 8 files:
#   summary.txt     one line per step (status, seconds) and the key numbers
#   build.log       machine, toolchain, configure, build
#   tests.log       kernel tests, compute-sanitizer
#   bench.log       benchmark console tables
#   train.log       vit_train output
#   step_ratio.md   the side-by-side: vitcuda vs torch eager / torch.compile, img/s, MFU, launches
#   results.tar.gz  kernel_tests.xml, bench_<name>.json (bench_step.json among them),
#                   torch_step.json, train_<device>/ (config.json, history.csv, results.json, ...)
#
# Environment: OUT, BUILD_DIR (build/gpu), BUDGET_S (quick 290, full/sanitize/step 540: the whole
# call, steps time-boxed to fit), JOBS (nproc), BENCH_MIN_TIME (0.2 s per benchmark),
# BUILD_ALL=1, SANITIZE_FILTER (gtest filter), CUDA_ARCHS ("80;90a"), STEP_BENCH_S (full: the
# seconds kept for the side-by-side, 170), TORCH_STEPS / TORCH_WARMUP (torch_step.py's timed and
# warm-up steps, 10 / 3). Without a GPU (e.g.
# here) the GPU steps print "no GPU" and are skipped; quick then exits 0 when the build
# succeeded. Exit status otherwise: 1 when a step failed or timed out (see summary.txt).
set -uo pipefail

mode="${1:-quick}"
case "$mode" in quick | full | sanitize | step) ;; *) echo "usage: $0 [quick|full|sanitize|step]" >&2; exit 2 ;; esac
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root" || exit 1
OUT="${OUT:-$root/out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
build="${BUILD_DIR:-build/gpu}"
[[ "$build" == /* ]] || build="$root/$build"
if [[ "$mode" == quick ]]; then budget="${BUDGET_S:-290}"; else budget="${BUDGET_S:-540}"; fi
jobs="${JOBS:-$(nproc)}"
bench_min_time="${BENCH_MIN_TIME:-0.2}"
deadline=$((SECONDS + budget))
reserve=15  # kept for the summary and the archive
# full: the last seconds of the budget are the side-by-side's (bench_step + torch_step.py + the
# ratio table): the steps before it are time-boxed to leave them (reserve is raised until then).
step_bench_s="${STEP_BENCH_S:-170}"
if [[ "$mode" == full ]]; then reserve=$((15 + step_bench_s)); fi
work="$build/session"
rm -rf "$work"
mkdir -p "$work"

summary="$OUT/summary.txt"
buildlog="$OUT/build.log"
testslog="$OUT/tests.log"
benchlog="$OUT/bench.log"
trainlog="$OUT/train.log"
ratio="$OUT/step_ratio.md"
: > "$summary"
failed=0

note() { echo "$*" | tee -a "$summary"; }
# step NAME CAP LOG CMD...: runs CMD time-boxed to min(CAP, what the budget has left), output
# appended to LOG; records the outcome. Returns CMD's status (124: timed out, 125: skipped).
# With skip_rc=N in its environment, CMD's exit status N means "skipped" (not a failure).
step() {
  local name="$1" cap="$2" log="$3"
  shift 3
  local left=$((deadline - SECONDS - reserve))
  local t=$((cap < left ? cap : left))
  if ((t < 10)); then
    printf '%-28s skipped: time budget spent\n' "$name" | tee -a "$summary"
    return 125
  fi
  echo "==== $name (time box ${t}s): $*" >> "$log"
  local t0=$SECONDS rc=0 status
  timeout -k 10 "$t" "$@" >> "$log" 2>&1 || rc=$?
  if ((rc == 0)); then
    status=ok
  elif [[ -n "${skip_rc:-}" ]] && ((rc == skip_rc)); then
    status="skipped (exit $rc)"
  elif ((rc == 124 || rc == 137)); then
    status="TIMEOUT (${t}s box)"
    failed=1
  else
    status="FAILED (exit $rc)"
    failed=1
  fi
  echo "==== $name: $status ($((SECONDS - t0))s)" >> "$log"
  printf '%-28s %-22s %4ss  -> %s\n' "$name" "$status" "$((SECONDS - t0))" "$(basename "$log")" | tee -a "$summary"
  return $rc
}

# ---- the machine and the toolchain -----------------------------------------------------------
for d in /usr/local/cuda/bin /opt/torch/.venv/bin; do
  [[ -d "$d" && ":$PATH:" != *":$d:"* ]] && PATH="$PATH:$d"
done
export PATH
if [[ -z "${CUDACXX:-}" ]] && command -v nvcc >/dev/null; then export CUDACXX="$(command -v nvcc)"; fi
python=""
for p in "${VITCUDA_PYTHON:-}" /opt/torch/.venv/bin/python3 python3; do
  if [[ -n "$p" ]] && command -v "$p" >/dev/null; then python="$(command -v "$p")"; break; fi
done
have_gpu=0
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then have_gpu=1; fi

commit="no git metadata"
if git rev-parse --short HEAD >/dev/null 2>&1; then
  commit="commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- 2>/dev/null || echo ' + local changes')"
fi
note "vitcuda gpu_session.sh $mode: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(hostname), $commit"
if ((have_gpu)); then
  note "GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader | head -1)"
else
  note "GPU: no GPU (nvidia-smi missing or no device): the GPU steps are skipped"
fi
{
  echo "==== machine"
  uname -a
  grep -h PRETTY_NAME /etc/os-release 2>/dev/null
  ldd --version 2>&1 | head -1
  echo "cores: $(nproc), memory: $(free -g 2>/dev/null | awk '/Mem:/ {print $2 " GiB"}')"
  echo "==== toolchain"
  for t in cmake ninja nvcc c++ gcc; do
    printf '%s: %s\n' "$t" "$(command -v $t >/dev/null && { $t --version 2>&1 | grep -m1 -iE 'version|[0-9]+\.[0-9]+' ; } || echo missing)"
  done
  echo "python: ${python:-missing} $([[ -n "$python" ]] && "$python" -c 'import sys; print(sys.version.split()[0])')"
  [[ -n "$python" ]] && "$python" - <<'EOF' 2>&1
import importlib.util
for name in ("torch", "nvidia.cudnn"):
    spec = importlib.util.find_spec(name.split(".")[0]) and importlib.util.find_spec(name)
    print(f"{name}: {list(spec.submodule_search_locations) if spec else 'missing'}")
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
except Exception as e:
    print("torch: not importable:", e)
EOF
  echo "third_party: $(cat third_party/MANIFEST.txt 2>/dev/null | tr '\n' ';' || echo missing)"
  if ((have_gpu)); then echo "==== nvidia-smi"; nvidia-smi; fi
} >> "$buildlog" 2>&1
command -v cmake >/dev/null || { note "cmake not found"; exit 1; }

# ---- configure + build -----------------------------------------------------------------------
# This machine's cuDNN is the nvidia-cudnn-cu13 wheel of /opt/torch/.venv: CMake gets its folder
# (CUDNN_ROOT: include/, lib/) and the interpreter (VITCUDA_PYTHON) explicitly, it searches no
# machine paths of its own (bench/CMakeLists.txt).
cudnn_args=()
if [[ -n "$python" ]]; then
  cudnn_dir="$("$python" -c 'import nvidia.cudnn as m; print(list(m.__path__)[0])' 2>/dev/null || true)"
  if [[ -n "$cudnn_dir" && -d "$cudnn_dir/include" ]]; then
    cudnn_args=(-DCUDNN_ROOT="$cudnn_dir")
    export LD_LIBRARY_PATH="$cudnn_dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
  cudnn_args+=(-DVITCUDA_PYTHON="$python")
fi
generator=(-G Ninja)
command -v ninja >/dev/null || generator=()
step configure 180 "$buildlog" cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-80;90a}" -DVITCUDA_CUDA=ON -DVITCUDA_BUILD_TESTS=ON \
  -DVITCUDA_BUILD_BENCH=ON -DVITCUDA_BUILD_TOOLS=ON -DVITCUDA_NATIVE=ON "${cudnn_args[@]}"
grep -E -- '^-- vitcuda: ' "$buildlog" | sed 's/^-- /  /' | awk '!seen[$0]++' >> "$summary"

targets=(vitcuda_kernel_tests_cuda)
if [[ "$mode" == step ]]; then targets=(bench_step); fi
if [[ "$mode" == full ]]; then
  targets+=(vit_train)
  # Every native benchmark binary (bench_*, not the emulator smoke builds bench_*_emu).
  mapfile -t benches < <(cmake --build "$build" --target help 2>/dev/null |
    grep -oE '(^|\.\.\. )bench_[A-Za-z0-9_]+' | sed 's/^\.\.\. //' | grep -v '_emu$' | sort -u)
  targets+=("${benches[@]}")
fi
if [[ "${BUILD_ALL:-0}" == 1 ]]; then targets=(all); fi
# Keep going past a failing target: the others still build and their steps still run.
keep_going=(-- -k 0)
[[ ${#generator[@]} -eq 0 ]] && keep_going=(-- -k)
step build 420 "$buildlog" cmake --build "$build" -j "$jobs" --target "${targets[@]}" "${keep_going[@]}"
build_rc=$?
if ((build_rc != 0)); then
  grep -E -m 20 'error|FAILED' "$buildlog" | sed 's/^/  /' >> "$summary"
fi
kt="$build/tests/vitcuda_kernel_tests_cuda"

# ---- GPU steps -----------------------------------------------------------------------------
gpu_step() {  # gpu_step NAME CAP LOG CMD...: step, or "no GPU"
  if ((!have_gpu)); then
    printf '%-28s no GPU: skipped\n' "$1" | tee -a "$summary"
    return 0
  fi
  step "$@"
}
gtest_counts() {  # the gtest summary lines of a log, for the summary
  [[ -f "$1" ]] || return 0
  grep -E '^\[  (PASSED|FAILED|SKIPPED) +\]|tests? ran' "$1" | tail -4 | sed 's/^/  /' >> "$summary"
}

# The side-by-side: bench_step, then torch_step.py on the same GPU (MFU against bench_step's
# measured peak), then the ratio table (step_ratio.md, also appended to the summary). What is left
# of the budget bounds torch_step.py (--time-budget): it starts a run only when its estimate fits
# (torch.compile of a training step on a cold cache: ~60 s), so ViT-B's compile is the first to go.
side_by_side() {
  local exe="$build/bench/bench_step" peak="" left py="${python:-python3}"
  if [[ -x "$exe" ]]; then
    gpu_step bench_step 120 "$benchlog" "$exe" --benchmark_counters_tabular=true \
      --benchmark_min_time="$bench_min_time" --benchmark_out="$work/bench_step.json" --benchmark_out_format=json
  else
    note "$(printf '%-28s not built' bench_step)"
    failed=1
  fi
  if [[ -s "$work/bench_step.json" ]]; then
    peak="$("$py" -c 'import json, sys
b = [x for x in json.load(open(sys.argv[1]))["benchmarks"] if x.get("peak_TFLOP/s")]
print(b[0]["peak_TFLOP/s"] if b else "")' "$work/bench_step.json" 2>/dev/null || true)"
  fi
  if [[ -z "$python" ]]; then
    note "$(printf '%-28s skipped: no python' torch_step)"
  else
    left=$((deadline - SECONDS - reserve))
    skip_rc=77 gpu_step torch_step "$left" "$benchlog" "$python" "$root/bench/torch_step.py" \
      --json "$work/torch_step.json" --steps "${TORCH_STEPS:-10}" --warmup "${TORCH_WARMUP:-3}" \
      --time-budget "$((left > 25 ? left - 15 : 10))" ${peak:+--peak-tflops "$peak"}
    grep -E '^torch_step: .*(skipped|FAILED|note)' "$benchlog" | sed 's/^/  /' >> "$summary"
  fi
  if [[ -s "$work/bench_step.json" || -s "$work/torch_step.json" ]]; then
    if "$py" "$root/bench/torch_step.py" --table "$work/bench_step.json" "$work/torch_step.json" > "$ratio.tmp"; then
      mv "$ratio.tmp" "$ratio"
      sed 's/^/  /' "$ratio" >> "$summary"
    else
      rm -f "$ratio.tmp"
      note "step_ratio.md                FAILED (see bench.log)"
      failed=1
    fi
  fi
}

if [[ "$mode" == sanitize ]]; then
  gpu_step sanitize $((budget)) "$testslog" bash "$root/tools/sanitize.sh" "$build" "${SANITIZE_FILTER:-*}"
  grep -E '^==== .*: (clean|FAILED)' "$testslog" | sed 's/^/  /' >> "$summary"
elif [[ "$mode" == step ]]; then
  reserve=15
  side_by_side
elif [[ -x "$kt" ]]; then
  gpu_step kernel_tests 150 "$testslog" "$kt" --gtest_output="xml:$work/kernel_tests.xml" --gtest_brief=1
  if ((!have_gpu)); then  # at least: the binary loads (its shared libraries resolve) and lists its tests
    step kernel_tests_list_only 30 "$testslog" "$kt" --gtest_list_tests
  fi
  gtest_counts "$testslog"
  if [[ "$mode" == full ]]; then
    gpu_step sanitize 100 "$testslog" bash "$root/tools/sanitize.sh" "$build" "${SANITIZE_FILTER:-*}"
    grep -E '^==== .*: (clean|FAILED)' "$testslog" | sed 's/^/  /' >> "$summary"
  fi
else
  note "kernel_tests                 not built (see build.log)"
  failed=1
fi

if [[ "$mode" == full ]]; then
  # Benchmarks: the fused kernels against their baselines; GPU ones first, the CPU one last.
  ordered=()
  for b in bench_attention bench_gemm bench_elementwise "${benches[@]}"; do
    # bench_step runs in the side-by-side below, beside torch_step.py.
    [[ " ${ordered[*]} " == *" $b "* || "$b" == bench_cpu_ops || "$b" == bench_step ]] && continue
    ordered+=("$b")
  done
  [[ " ${benches[*]} " == *" bench_cpu_ops "* ]] && ordered+=(bench_cpu_ops)
  for b in "${ordered[@]}"; do
    exe="$build/bench/$b"
    if [[ ! -x "$exe" ]]; then
      note "$(printf '%-28s not built' "$b")"
      continue
    fi
    run_bench=(step)
    [[ "$b" == bench_cpu_ops ]] || run_bench=(gpu_step)
    "${run_bench[@]}" "$b" 90 "$benchlog" "$exe" --benchmark_counters_tabular=true \
      --benchmark_min_time="$bench_min_time" --benchmark_out="$work/$b.json" --benchmark_out_format=json
  done

  # Training: the default settings on the carried Fashion-MNIST (xz in third_party: unpacked here).
  data=/usr/share/datasets/fashion-mnist
  if [[ ! -f "$data/train-images-idx3-ubyte.gz" && ! -f "$data/train-images-idx3-ubyte" ]]; then
    data="$build/data/fashion-mnist"
    mkdir -p "$data"
    for f in "$root"/third_party/data/fashion-mnist/*-ubyte.xz; do
      [[ -f "$f" ]] || continue
      dst="$data/$(basename "$f" .xz)"
      [[ -s "$dst" ]] && continue
      if command -v xz >/dev/null; then
        xz -dc "$f" > "$dst.tmp" && mv "$dst.tmp" "$dst"
      else
        "$python" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
          "$f" "$dst.tmp" && mv "$dst.tmp" "$dst"
      fi
    done
  fi
  echo "data: $data ($(ls "$data" 2>/dev/null | tr '\n' ' '))" >> "$trainlog"
  train="$build/tools/vit_train"
  if [[ -x "$train" ]]; then
    gpu_step vit_train_cuda 200 "$trainlog" "$train" --device cuda --data-dir "$data" --no-progress \
      --output "$work/train_cuda"
    grep -E '^(epoch|test:|vit_train)' "$trainlog" | tail -3 | sed 's/^/  /' >> "$summary"
    # DeiT distillation (issue #15): a student with the distillation token, taught by the model
    # just trained (its best.safetensors), soft targets, two epochs; the teacher runs inside the
    # captured step.
    if [[ -f "$work/train_cuda/best.safetensors" ]]; then
      gpu_step vit_train_distill 90 "$trainlog" "$train" --device cuda --data-dir "$data" --no-progress \
        --epochs 2 --distilled --distill-from "$work/train_cuda" --distill soft --distill-tau 2 \
        --output "$work/train_distill"
      grep -E '^(distillation|epoch|test:)' "$trainlog" | tail -2 | sed 's/^/  /' >> "$summary"
    else
      note "$(printf '%-28s skipped: no teacher (vit_train_cuda wrote no best.safetensors)' vit_train_distill)"
    fi
    # Data parallelism's NCCL communicator (issue #14) on this one GPU, where MPI is installed and
    # the build found NCCL: one rank, one epoch, --comm nccl. One rank starts NCCL (MPI bootstrap,
    # ncclCommInitRank, its stream) but issues no collective (they need two GPUs: NCCL refuses two
    # ranks on one device); a machine with several GPUs runs `mpirun -np N` of the same line.
    if command -v mpirun >/dev/null && grep -q 'communicators.*nccl (' "$buildlog"; then
      gpu_step vit_train_nccl_1rank 120 "$trainlog" mpirun --allow-run-as-root -np 1 "$train" --device cuda \
        --comm nccl --epochs 1 --data-dir "$data" --no-progress --output "$work/train_nccl"
      grep -E '^(epoch|test|data parallel)' "$trainlog" | tail -2 | sed 's/^/  /' >> "$summary"
    else
      note "$(printf '%-28s skipped: no mpirun or no NCCL in the build' vit_train_nccl_1rank)"
    fi
  else
    note "vit_train                    not built (see build.log)"
    failed=1
  fi

  # The time kept for it is now the side-by-side's.
  reserve=15
  side_by_side

  if [[ -x "$train" ]]; then
    # The CPU reference for comparison: one epoch, only when time is left.
    if ((deadline - SECONDS - reserve > 120)); then
      step vit_train_cpu_1epoch 90 "$trainlog" "$train" --device cpu --epochs 1 --data-dir "$data" --no-progress \
        --output "$work/train_cpu_1epoch"
      grep -E '^(epoch|test:)' "$trainlog" | tail -2 | sed 's/^/  /' >> "$summary"
    else
      note "$(printf '%-28s skipped: time budget' vit_train_cpu_1epoch)"
    fi
  fi
fi

# ---- results -------------------------------------------------------------------------------
rm -f "$work"/train_*/*.safetensors  # checkpoints stay on the machine
if compgen -G "$work/*" >/dev/null; then
  tar -C "$work" -czf "$OUT/results.tar.gz" . 2>/dev/null
fi
note "total ${SECONDS}s of a ${budget}s budget; files in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
if ((build_rc != 0)); then exit 1; fi
if [[ "$mode" == quick ]] && ((!have_gpu)); then exit 0; fi
exit $failed
