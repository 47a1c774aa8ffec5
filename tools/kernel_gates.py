#!/usr/bin/env python3
"""Static kernel gates: what the compiler made of every native kernel, against checked-in tables.

For each kernel in the native build (libvitcuda_kernels.a) and each architecture (sm_90a, sm_80)
it measures registers, spill bytes, shared memory, occupancy, 64-bit integer divisions and
local-memory instructions from cuobjdump, and compares them with tests/gates/<arch>.tsv. No GPU
is needed. What each column means and how to update a table: tests/gates/README.md.

  kernel_gates.py --check   fail (exit 1, one line per violation) when a kernel of the training
                            or inference step gained a spill, a 64-bit division or a local-memory
                            instruction, fell below its occupancy floor, or is missing from the
                            table; improvements and other changes are printed as notes
  kernel_gates.py --write   rewrite the measured columns of the tables, keeping the hand-set
                            floors and the comment lines

Inputs: --lib (or --build DIR: DIR/kernels/libvitcuda_kernels.a) and the launch table (--launches
FILE, or --launch-program EXE that writes one; --build DIR finds DIR/tests/
vitcuda_gates_launch_table): "kernel<TAB>block_threads<TAB>dynamic_smem_bytes" per kernel of the
steps. Without it, occupancy comes from __launch_bounds__ where a kernel has one (else unknown,
not gated) and the step kernels are the ones the table marks. Exit 77 (skipped) without cuobjdump.
Standard library only.
"""
import argparse
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP = 77

# Per-SM limits of the GPU each architecture's code runs on (CUDA C++ Programming Guide,
# "Compute Capabilities", table "Technical Specifications per Compute Capability", and the
# device properties: sharedMemPerMultiprocessor, sharedMemPerBlockOptin,
# reservedSharedMemPerBlock); the allocation rules are those of the toolkit's cuda_occupancy.h
# (registers per warp rounded up to 256, per quarter-SM sub-partition; shared memory in 128-byte
# units, 1 KiB reserved per CTA).
GPUS = {
    "sm_90a": dict(gpu="H100", regs_per_sm=65536, regs_per_cta=65536, max_regs_per_thread=255,
                   reg_unit=256, sub_partitions=4, max_warps=64, max_ctas=32,
                   smem_per_sm=228 * 1024, smem_per_cta=227 * 1024, reserved_smem=1024, smem_unit=128),
    "sm_80": dict(gpu="A100", regs_per_sm=65536, regs_per_cta=65536, max_regs_per_thread=255,
                  reg_unit=256, sub_partitions=4, max_warps=64, max_ctas=32,
                  smem_per_sm=164 * 1024, smem_per_cta=163 * 1024, reserved_smem=1024, smem_unit=128),
}

COLUMNS = ["kernel", "step", "regs", "spill_bytes", "static_smem", "dyn_smem", "threads",
           "ctas_sm", "warps_sm", "div64", "local_insts", "floor_warps"]
MEASURED = COLUMNS[1:-1]
UNKNOWN = "-"


def roundup(x, unit):
    return (x + unit - 1) // unit * unit


def occupancy(gpu, regs, static_smem, dyn_smem, threads):
    """Resident CTAs per SM (cudaOccMaxActiveBlocksPerMultiprocessor's rules, no carveout)."""
    g = GPUS[gpu]
    warps = (threads + 31) // 32
    limits = [g["max_ctas"], g["max_warps"] // warps]
    # Registers: allocated per warp in 256-register units, in each of the 4 sub-partitions.
    per_warp = roundup(max(regs, 1) * 32, g["reg_unit"])
    if (regs > g["max_regs_per_thread"] or per_warp * warps > g["regs_per_cta"]
            or per_warp * roundup(warps, g["sub_partitions"]) > g["regs_per_cta"]):
        return 0
    warps_per_sub = (g["regs_per_sm"] // g["sub_partitions"]) // per_warp
    limits.append(warps_per_sub * g["sub_partitions"] // warps)
    # Shared memory: static + dynamic + the reserved KiB, in 128-byte units.
    if static_smem + dyn_smem > g["smem_per_cta"]:
        return 0
    smem = roundup(static_smem + dyn_smem + g["reserved_smem"], g["smem_unit"])
    limits.append(g["smem_per_sm"] // smem)
    return min(limits)


def initial_floor(warps):
    """A new kernel's floor: today's warps per SM rounded down to a multiple of 8."""
    return warps if warps < 8 else warps // 8 * 8


# ---- names ---------------------------------------------------------------------------------------

def short_name(demangled):
    """The launch records' name (kernels/runtime.h short_kernel_name): no return type, no
    parameter list, no build namespace; nvcc's per-file anonymous namespaces read as
    "(anonymous namespace)", as the host compiler prints them."""
    name = re.sub(r"_GLOBAL__N__[0-9A-Za-z_]+", "(anonymous namespace)", demangled)
    if name.startswith("void "):
        name = name[5:]
    depth = 0
    for i, c in enumerate(name):
        if c == "<":
            depth += 1
        elif c == ">":
            depth -= 1
        elif c == "(" and depth == 0 and not name.startswith("(anonymous namespace)", i):
            name = name[:i]
            break
    for ns in ("kernels_emu::", "kernels_cuda::"):
        name = name.replace(ns, "")
    return name


def demangle(names):
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt:
        sys.exit("kernel_gates: c++filt (binutils) not found")
    out = subprocess.run([cxxfilt], input="\n".join(names) + "\n", capture_output=True, text=True,
                         check=True).stdout.splitlines()
    return dict(zip(names, out))


# ---- cuobjdump -----------------------------------------------------------------------------------

class Skipped(Exception):
    """The check cannot run here (exit 77, ctest's SKIP_RETURN_CODE)."""


def find_cuobjdump(args):
    candidates = [os.environ.get("CUOBJDUMP"), shutil.which("cuobjdump")]
    for d in (args.cuda_bin, os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if d:
            candidates += [os.path.join(d, "cuobjdump"), os.path.join(d, "bin", "cuobjdump")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.join(os.path.dirname(os.path.realpath(nvcc)), "cuobjdump"))
    tp = args.third_party or os.environ.get("VITCUDA_THIRD_PARTY_DIR") or os.path.join(ROOT, "third_party")
    candidates.append(os.path.join(tp, "cuobjdump", "bin", "cuobjdump"))
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def cuobjdump(tool, *args):
    env = dict(os.environ)
    # cuobjdump -sass runs nvdisasm: look beside cuobjdump first (tools/setup.sh puts both there).
    env["PATH"] = os.path.dirname(tool) + os.pathsep + env.get("PATH", "")
    r = subprocess.run([tool, *args], capture_output=True, text=True, env=env)
    if r.returncode != 0 and "nvdisasm" in r.stderr:
        raise Skipped(f"{tool} found, but not the nvdisasm it runs for -sass (tools/setup.sh puts "
                      "both in third_party/cuobjdump/bin)")
    if r.returncode != 0:
        sys.exit(f"kernel_gates: {os.path.basename(tool)} {' '.join(args)} failed:\n{r.stderr.strip()}")
    return r.stdout


RES_ARCH = re.compile(r"^arch = (sm_\w+)")
RES_FUNC = re.compile(r"^\s*Function (\S+):\s*$")
RES_VALS = re.compile(r"(\w+(?:\[\d+\])?):(\d+)")


def resource_usage(text):
    """{arch: {mangled: {REG, STACK, SHARED, LOCAL, ...}}} from cuobjdump -res-usage; a kernel
    found in several objects keeps the largest of each value."""
    usage, arch, func = {}, None, None
    for line in text.splitlines():
        m = RES_ARCH.match(line)
        if m:
            arch, func = m.group(1), None
            continue
        if line.startswith("Fatbin ptx code"):
            arch, func = None, None
            continue
        m = RES_FUNC.match(line)
        if m and arch:
            func = m.group(1)
            continue
        if func and "REG:" in line:
            vals = {k: int(v) for k, v in RES_VALS.findall(line)}
            old = usage.setdefault(arch, {}).get(func)
            usage[arch][func] = vals if old is None else {k: max(v, old.get(k, 0)) for k, v in vals.items()}
            func = None
    return usage


SASS_FUNC = re.compile(r"^\s*Function : (\S+)")
SASS_INSN = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)\s*([^;]*);")
CALL_TARGET = re.compile(r"0x([0-9a-f]+)")


def sass_counts(insns):
    """(div64, local_insts) of one function's SASS. A 64-bit integer division or modulo is the
    nvcc routine around I2F.U64.RP + MUFU.RCP (the reciprocal of the 64-bit divisor): usually a
    subroutine after the kernel's EXIT, CALLed once per division in the source (a/b and a%b of the
    same operands share one), sometimes inlined. Counted: the CALLs to such a subroutine plus the
    inlined copies. Local memory: every LDL*/STL* instruction."""
    local = sum(1 for _, op, _ in insns if op.startswith(("LDL", "STL")))
    addrs = [a for a, _, _ in insns]
    div_regions = []  # (start, end) of subroutines holding I2F.U64.RP
    calls = []
    for i, (addr, op, operands) in enumerate(insns):
        if op.startswith("CALL.REL"):
            m = CALL_TARGET.search(operands)
            if m:
                calls.append(int(m.group(1), 16))
    for target in set(calls):
        if target not in addrs:
            continue
        j = addrs.index(target)
        end = j
        while end < len(insns) and not insns[end][1].startswith("RET"):
            end += 1
        if any(op.startswith("I2F.U64.RP") for _, op, _ in insns[j:end + 1]):
            div_regions.append((target, insns[min(end, len(insns) - 1)][0]))
    div64 = sum(1 for t in calls if any(s == t for s, _ in div_regions))
    for addr, op, _ in insns:
        if op.startswith("I2F.U64.RP") and not any(s <= addr <= e for s, e in div_regions):
            div64 += 1
    return div64, local


def sass(text):
    """{mangled: (div64, local_insts)} from cuobjdump -sass; the largest over objects holding the
    same kernel."""
    out, func, insns = {}, None, []

    def flush():
        if func is not None:
            d, l = sass_counts(insns)
            old = out.get(func, (0, 0))
            out[func] = (max(d, old[0]), max(l, old[1]))

    for line in text.splitlines():
        m = SASS_FUNC.match(line)
        if m:
            flush()
            func, insns = m.group(1), []
            continue
        m = SASS_INSN.match(line)
        if m and func is not None:
            insns.append((int(m.group(1), 16), m.group(2), m.group(3)))
    flush()
    return out


def launch_bounds(text):
    """{mangled: max threads per block} of the kernels with __launch_bounds__ (EIATTR_MAX_THREADS),
    from cuobjdump -elf."""
    out, func, attr = {}, None, None
    for line in text.splitlines():
        m = re.match(r"^\.nv\.info\.(\S+)$", line.strip())
        if m:
            func, attr = m.group(1), None
            continue
        if line.strip().startswith("Attribute:"):
            attr = line.split(":", 1)[1].strip()
            continue
        if func and attr in ("EIATTR_MAX_THREADS", "EIATTR_REQNTID") and line.strip().startswith("Value:"):
            dims = [int(v, 16) for v in re.findall(r"0x[0-9a-f]+", line)]
            if dims:
                n = 1
                for d in dims[:3]:
                    n *= max(d, 1)
                out[func] = min(out.get(func, n), n)
            attr = None
    return out


# ---- launch table --------------------------------------------------------------------------------

def read_launches(path):
    """{kernel: (block_threads, dynamic_smem_bytes)} from a launch table; the largest of repeats."""
    out = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            fields = line.split("\t")
            if fields[0] == "kernel":
                continue
            if len(fields) < 3:
                sys.exit(f"kernel_gates: {path}:{n}: expected kernel<TAB>block_threads<TAB>dynamic_smem_bytes")
            threads, smem = int(fields[1]), int(fields[2])
            old = out.get(fields[0], (0, 0))
            out[fields[0]] = (max(threads, old[0]), max(smem, old[1]))
    return out


def get_launches(args, work):
    if args.launches:
        return read_launches(args.launches)
    program = args.launch_program
    if not program and args.build:
        p = os.path.join(args.build, "tests", "vitcuda_gates_launch_table")
        program = p if os.path.isfile(p) else None
    if not program:
        return None
    out = os.path.join(work, "launches.tsv")
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=0")  # the emulator's fiber pool lives until exit
    r = subprocess.run([program, out], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"kernel_gates: {program} failed (exit {r.returncode}):\n{r.stdout}{r.stderr}")
    return read_launches(out)


# ---- measure ---------------------------------------------------------------------------------------

def measure(args, tool, lib, launches):
    """{arch: {kernel: {column: value}}} for the architectures of GPUS present in the library."""
    usage = resource_usage(cuobjdump(tool, "-res-usage", lib))
    names = demangle(sorted({f for funcs in usage.values() for f in funcs}))
    for arch in sorted(set(usage) - set(GPUS)):
        print(f"note: {arch} is in the library but has no limits in {os.path.basename(__file__)}: not gated")
    archs = sorted(set(usage) & set(GPUS))
    # The disassembly (nvdisasm, the slow part) of the architectures at once.
    with concurrent.futures.ThreadPoolExecutor(max_workers=2 * len(archs) or 1) as pool:
        sass_text = {a: pool.submit(cuobjdump, tool, "-sass", "-arch", a, lib) for a in archs}
        elf_text = {a: pool.submit(cuobjdump, tool, "-elf", "-arch", a, lib) for a in archs}
    result = {}
    for arch in archs:
        counts = sass(sass_text[arch].result())
        bounds = launch_bounds(elf_text[arch].result())
        rows = {}
        for func, u in usage[arch].items():
            name = short_name(names[func])
            div64, local = counts.get(func, (0, 0))
            row = dict(kernel=name, regs=u.get("REG", 0), spill_bytes=u.get("STACK", 0) + u.get("LOCAL", 0),
                       static_smem=u.get("SHARED", 0), div64=div64, local_insts=local)
            if launches is not None and name in launches:
                row["step"] = "yes"
                row["threads"], row["dyn_smem"] = launches[name]
            else:
                row["step"] = "no" if launches is not None else UNKNOWN
                row["threads"] = bounds.get(func, UNKNOWN)  # __launch_bounds__, else unknown
                row["dyn_smem"] = 0 if row["threads"] != UNKNOWN else UNKNOWN
            if row["threads"] != UNKNOWN:
                ctas = occupancy(arch, row["regs"], row["static_smem"], row["dyn_smem"], row["threads"])
                row["ctas_sm"], row["warps_sm"] = ctas, ctas * ((row["threads"] + 31) // 32)
            else:
                row["ctas_sm"] = row["warps_sm"] = UNKNOWN
            old = rows.get(name)
            if old is not None:  # the same name from two objects: keep the worse of each
                for c in ("regs", "spill_bytes", "static_smem", "div64", "local_insts"):
                    row[c] = max(row[c], old[c])
                if old["warps_sm"] != UNKNOWN and (row["warps_sm"] == UNKNOWN or old["warps_sm"] < row["warps_sm"]):
                    row["ctas_sm"], row["warps_sm"] = old["ctas_sm"], old["warps_sm"]
            rows[name] = row
        result[arch] = rows
    return result


# ---- tables ----------------------------------------------------------------------------------------

def table_path(args, arch):
    return os.path.join(args.tables, f"{arch}.tsv")


def read_table(path):
    """(preamble lines, {kernel: row}, {kernel: comment lines before its row})."""
    preamble, rows, comments, pending, header = [], {}, {}, [], False
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if line.startswith("#") or not line.strip():
                (pending if header else preamble).append(line)
                continue
            fields = line.split("\t")
            if not header:
                if fields != COLUMNS:
                    sys.exit(f"kernel_gates: {path}:{n}: the header must be: {' '.join(COLUMNS)}")
                header = True
                continue
            if len(fields) != len(COLUMNS):
                sys.exit(f"kernel_gates: {path}:{n}: {len(fields)} columns, expected {len(COLUMNS)}")
            row = {c: (v if c in ("kernel", "step") or v == UNKNOWN else int(v)) for c, v in zip(COLUMNS, fields)}
            rows[row["kernel"]] = row
            if pending:
                comments[row["kernel"]] = [c for c in pending if c.strip()]
                pending = []
    return preamble, rows, comments


PREAMBLE = """# Kernel gates, {arch}: occupancy on {gpu}. One row per kernel of libvitcuda_kernels.a.
# Written by `python3 tools/kernel_gates.py --write` (every column but floor_warps, the hand-set
# occupancy floor); checked by the ctest kernel_gates. Columns and how to update: README.md here.
# A comment line just above a row belongs to that kernel and is kept by --write."""


def write_table(args, arch, rows):
    path = table_path(args, arch)
    preamble, old_rows, comments = read_table(path) if os.path.exists(path) else ([], {}, {})
    if not preamble:
        preamble = PREAMBLE.format(arch=arch, gpu=GPUS[arch]["gpu"]).splitlines()
    lines = preamble + ["\t".join(COLUMNS)]
    for name in sorted(rows):
        row = dict(rows[name])
        old = old_rows.get(name)
        if old is not None:
            row["floor_warps"] = old["floor_warps"]
        elif row["step"] == "yes" and row["warps_sm"] != UNKNOWN:
            row["floor_warps"] = initial_floor(row["warps_sm"])
        else:
            row["floor_warps"] = UNKNOWN  # not gated: no floor
        if row["floor_warps"] != UNKNOWN and row["warps_sm"] != UNKNOWN and row["warps_sm"] < row["floor_warps"]:
            print(f"warning: {arch} {name}: {row['warps_sm']} warps/SM is below its floor "
                  f"{row['floor_warps']}: lower floor_warps by hand if this is deliberate")
        lines += comments.get(name, [])
        lines.append("\t".join(str(row[c]) for c in COLUMNS))
    for name in sorted(set(old_rows) - set(rows)):
        print(f"note: {arch} {name}: no longer in the build, removed from the table")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {os.path.relpath(path)}: {len(rows)} kernels")


# ---- check -----------------------------------------------------------------------------------------

def check_arch(arch, rows, table, have_launches):
    """(failures, notes) of one architecture."""
    fails, notes = [], []
    gpu = GPUS[arch]["gpu"]
    for name in sorted(rows):
        row, want = rows[name], table.get(name)
        step = row["step"] == "yes" or (not have_launches and want is not None and want["step"] == "yes")
        if want is None:
            if step:
                fails.append(f"{arch} {name}: kernel of the step missing from the table "
                             f"(add it: tools/kernel_gates.py --write)")
            else:
                notes.append(f"{arch} {name}: not in the table (not a step kernel: not gated)")
            continue
        for col, what in (("spill_bytes", "spill/stack bytes"), ("div64", "64-bit divisions"),
                          ("local_insts", "local-memory instructions")):
            t, b = want[col], row[col]
            if t == UNKNOWN or b == UNKNOWN or b == t:
                continue
            line = f"{arch} {name}: {col} table {t}, build {b}"
            if b > t and step:
                fails.append(f"{line} ({'new' if t == 0 else 'more'} {what})")
            elif b > t:
                notes.append(f"{line} (more {what}; not a step kernel: not gated)")
            else:
                notes.append(f"{line} (fewer {what}: update the table)")
        floor, warps = want["floor_warps"], row["warps_sm"]
        if floor != UNKNOWN and warps != UNKNOWN and warps < floor:
            line = (f"{arch} {name}: warps_sm floor {floor}, build {warps} on {gpu} "
                    f"(regs {want['regs']}->{row['regs']}, threads {want['threads']}->{row['threads']}, "
                    f"smem {want['static_smem']}+{want['dyn_smem']}->{row['static_smem']}+{row['dyn_smem']})")
            (fails if step else notes).append(line + ("" if step else "; not a step kernel: not gated"))
        changed = [c for c in MEASURED if c not in ("spill_bytes", "div64", "local_insts") and
                   str(want[c]) != str(row[c]) and not (c == "step" and not have_launches)]
        if changed:
            notes.append(f"{arch} {name}: " + ", ".join(f"{c} {want[c]} -> {row[c]}" for c in changed) +
                         " (update the table)")
    for name in sorted(set(table) - set(rows)):
        notes.append(f"{arch} {name}: in the table, not in the build (update the table)")
    return fails, notes


# ---- main ------------------------------------------------------------------------------------------

def main():
    try:
        return run()
    except Skipped as e:
        print(f"kernel_gates: SKIPPED: {e}")
        return SKIP


def run():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="compare the build with the tables")
    mode.add_argument("--write", action="store_true", help="rewrite the tables' measured columns")
    p.add_argument("--build", default=os.path.join(ROOT, "build", "test"),
                   help="a native build folder (default build/test): its kernels/libvitcuda_kernels.a "
                        "and tests/vitcuda_gates_launch_table")
    p.add_argument("--lib", help="libvitcuda_kernels.a (default: from --build)")
    p.add_argument("--launches", help="launch table: kernel<TAB>block_threads<TAB>dynamic_smem_bytes")
    p.add_argument("--launch-program", help="a program that writes the launch table to its argument")
    p.add_argument("--tables", default=os.path.join(ROOT, "tests", "gates"), help="folder of <arch>.tsv")
    p.add_argument("--cuda-bin", help="the CUDA toolkit's bin folder, searched for cuobjdump")
    p.add_argument("--third-party", help="VITCUDA_THIRD_PARTY_DIR (tools/setup.sh's cuobjdump/bin)")
    p.add_argument("--verbose", action="store_true", help="print every row measured")
    args = p.parse_args()

    lib = args.lib or os.path.join(args.build, "kernels", "libvitcuda_kernels.a")
    if not os.path.isfile(lib):
        sys.exit(f"kernel_gates: no native kernel library at {lib} (build vitcuda_kernels with nvcc, or --lib)")
    tool = find_cuobjdump(args)
    if not tool:
        raise Skipped("no cuobjdump (not on PATH, in the CUDA toolkit or in third_party/cuobjdump/bin): "
                      "run tools/setup.sh, which installs it from PyPI (nvidia-cuda-cuobjdump, "
                      "nvidia-cuda-nvdisasm) when nvcc is present")
    with tempfile.TemporaryDirectory(prefix="kernel_gates.") as work:
        launches = get_launches(args, work)
    if launches is None:
        if args.write:
            sys.exit("kernel_gates: --write needs the launch table (--launches, --launch-program or --build)")
        print("note: no launch table: occupancy only where __launch_bounds__ gives the block size; "
              "step kernels as the tables mark them")
    measured = measure(args, tool, lib, launches)

    if args.write:
        for arch, rows in measured.items():
            write_table(args, arch, rows)
        return 0

    fails, notes = [], []
    for arch, rows in measured.items():
        if args.verbose:
            print("\t".join(["arch"] + COLUMNS[:-1]))
            for name in sorted(rows):
                print(arch, "\t".join(str(rows[name][c]) for c in COLUMNS[:-1]), sep="\t")
        path = table_path(args, arch)
        if not os.path.exists(path):
            fails.append(f"{arch}: no table {os.path.relpath(path)} (create it: tools/kernel_gates.py --write)")
            continue
        _, table, _ = read_table(path)
        if launches is not None:
            unmatched = sorted(set(launches) - set(rows))
            for name in unmatched:
                fails.append(f"{arch} {name}: launched in a step but not found in the build "
                             f"(kernel names of the launch table and of cuobjdump no longer match?)")
        f, n = check_arch(arch, rows, table, launches is not None)
        fails += f
        notes += n
    for path in sorted(os.listdir(args.tables)) if os.path.isdir(args.tables) else []:
        arch = path[:-4]
        if path.endswith(".tsv") and arch in GPUS and arch not in measured:
            notes.append(f"{arch}: table present but the library holds no {arch} code: not checked")

    for n in notes:
        print("note:", n)
    for arch, rows in measured.items():
        step = [r for r in rows.values() if r["step"] == "yes"]

        def having(col):
            return f"{sum(1 for r in rows.values() if r[col])} ({sum(1 for r in step if r[col])} in the steps)"

        known = sorted((r["warps_sm"], r["kernel"]) for r in step if r["warps_sm"] != UNKNOWN)
        lowest = f"{known[0][0]} warps/SM ({known[0][1]})" if known else UNKNOWN
        print(f"{arch} ({GPUS[arch]['gpu']}): {len(rows)} kernels ({len(step)} in the steps); kernels with spills "
              f"{having('spill_bytes')}, 64-bit divisions {having('div64')}, local memory "
              f"{having('local_insts')}; lowest step occupancy {lowest}")
    if notes and not fails:
        print("kernel gates: passed, with notes: a deliberate change updates the table "
              "(python3 tools/kernel_gates.py --write --build <native build>) in the same commit")
    for f in fails:
        print("FAIL", f)
    if fails:
        print(f"kernel gates: {len(fails)} violation(s). Fix the kernel, or, when the change is "
              f"deliberate, update tests/gates/<arch>.tsv in the same commit (tests/gates/README.md)")
        return 1
    print("kernel gates: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
