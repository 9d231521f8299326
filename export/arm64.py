"""The agreement check on ARM's own kernels: a .tflite file run by the aarch64 build of LiteRT, emulated.

    python -m export.arm64                      # provision the runtime once (make arm64-runtime), then offline
    python -m export.agreement MODEL FILE.tflite --target arm64 [--cores cortex-a53 cortex-a76 neoverse-n2]

Phones and the Coral Dev Board run aarch64, where LiteRT and XNNPACK pick other int8 kernels than on x86
(NEON; the dot-product SDOT/UDOT of Armv8.2; the 8-bit matrix multiply SMMLA of i8mm, Armv8.6 and v9),
each rounding its own way. Here the same file runs in the aarch64 wheel of ai-edge-litert, in an aarch64
Python unpacked from Debian's arm64 packages, under qemu-user's emulation of an ARM core
(`qemu-aarch64 -cpu CORE -L SYSROOT`: no chroot, no binfmt). XNNPACK chooses its kernels by the core's
features, which it reads from /proc/cpuinfo and the auxiliary vector: qemu gives the vector of the
emulated core, and each core's sysroot carries a /proc/cpuinfo that says the same (qemu 7 otherwise passes
the host's through: an x86 one, on which XNNPACK's detection crashes the process).

`provision()` fetches and unpacks the runtime once into a cache folder (KERASSEG_ARM64, default
~/.cache/kerasseg/arm64): Debian's package lists for arm64 and 22 packages (12 MB), the aarch64 wheels of
the ai-edge-litert and numpy versions installed here (30 MB); it needs Debian's qemu-user and apt-get, and
says so when they are missing. `ArmRunner` runs a file there on one core model; `check_targets` is what
export.agreement adds to a report for each core: agreement with the Keras model (the check's thresholds
apply), and with the x86 run of the same file.
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass

import numpy as np

from kerasseg.errors import InputError


@dataclass(frozen=True)
class Core:
    qemu: str  # qemu's -cpu model
    part: str  # the MIDR part number /proc/cpuinfo says
    features: str  # the Features line of /proc/cpuinfo: what XNNPACK chooses its kernels by
    about: str


_V8 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
_V82 = _V8 + " atomics fphp asimdhp asimdrdm lrcpc dcpop asimddp"
CORES = {
    "cortex-a53": Core("cortex-a53", "0xd03", _V8, "Armv8.0-A, NEON without dot-product: the Coral Dev Board's "
                       "i.MX 8M and entry phones"),
    "cortex-a76": Core("cortex-a76", "0xd0b", _V82, "Armv8.2-A with dot-product (SDOT/UDOT): most phones since 2019"),
    # (qemu 7.2's "max" core: on the demo's int8 file its outputs differ from x86 on 99.8 % of values and 20 %
    # of pixels, far beyond any rounding: suspected emulation, not kernels; not a default until checked on
    # hardware or a newer qemu)
    "neoverse-n2": Core("max", "0xd49", _V82 + " jscvt fcma sha3 sm3 sm4 sha512 asimdfhm flagm ssbs sb frint i8mm bf16",
                        "Armv9-A with i8mm (SMMLA) and bf16, as qemu's 'max' core emulates it (unverified: see "
                        "benchmarks/RESULTS.md)"),
}
DEFAULT_CORES = ("cortex-a53", "cortex-a76")
TARGETS = ("arm64",)
# Debian bookworm's aarch64 Python 3.11 and what it loads
PACKAGES = ("libc6", "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libexpat1", "zlib1g",
            "libffi8", "libssl3", "libbz2-1.0", "liblzma5", "libstdc++6", "libgcc-s1", "libuuid1", "libsqlite3-0",
            "libncursesw6", "libtinfo6", "libreadline8", "libcrypt1", "libnsl2", "libtirpc3", "libdb5.3",
            "media-types")
_PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_24_aarch64", "manylinux_2_27_aarch64",
              "manylinux_2_28_aarch64")
READY = "ready.json"  # written last: a folder without it is not a runtime

# run by the aarch64 Python: the file on the raw inputs, the raw outputs back (no kerasseg there)
CHILD = r'''
import json, platform, sys, time
import numpy as np
from ai_edge_litert import interpreter as litert
path, inputs, outputs = sys.argv[1:4]
interp = litert.Interpreter(model_path=path, num_threads=1)
interp.allocate_tensors()
signature = interp.get_signature_runner("serving_default") if "serving_default" in interp.get_signature_list() else None
started, results = time.time(), []
for x in np.load(inputs)["x"]:
    if signature is not None:
        name = list(signature.get_input_details())[0]
        y = signature(**{name: x[None]})
        results.append(y[list(signature.get_output_details())[0]][0])
    else:
        interp.set_tensor(interp.get_input_details()[0]["index"], x[None])
        interp.invoke()
        results.append(interp.get_tensor(interp.get_output_details()[0]["index"])[0])
np.save(outputs, np.stack(results))
print(json.dumps({"machine": platform.machine(), "seconds": round(time.time() - started, 2),
                  "litert": getattr(__import__("ai_edge_litert"), "__version__", None)}))
'''


class RuntimeMissing(InputError):
    """What the ARM runtime needs and this machine lacks, and how to get it."""


def directory():
    """Where the runtime is kept: KERASSEG_ARM64, or ~/.cache/kerasseg/arm64."""
    return os.environ.get("KERASSEG_ARM64") or os.path.join(os.path.expanduser("~"), ".cache", "kerasseg", "arm64")


def qemu():
    found = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
    if not found:
        raise RuntimeMissing("qemu-aarch64 is not installed: the ARM check runs the file under qemu-user's "
                             "emulation (Debian: apt-get install qemu-user)")
    return found


def _say(progress, text):
    if progress:
        print(f"arm64 runtime: {text}", file=sys.stderr, flush=True)


def _run(command, what, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode:
        raise RuntimeMissing(f"{what} failed (exit {result.returncode}): {(result.stderr or result.stdout)[-600:]}")
    return result


def _versions():
    from importlib.metadata import version

    return {"ai-edge-litert": version("ai-edge-litert"), "numpy": version("numpy")}


@contextlib.contextmanager
def _lock(path):
    import fcntl

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # (another process provisioning: wait for it, then use its runtime)
        yield


def provision(root=None, progress=True):
    """The folder of the ARM runtime, fetched and unpacked there first if it is not (idempotent; offline once
    made; two processes at once: one fetches, the other waits and uses it). A RuntimeMissing (a ValueError)
    says what this machine lacks."""
    root = root or directory()
    if os.path.isfile(os.path.join(root, READY)):
        return root
    qemu()
    for tool in ("apt-get", "dpkg-deb"):
        if not shutil.which(tool):
            raise RuntimeMissing(f"{tool} is not installed: the ARM runtime is unpacked from Debian's arm64 packages")
    with _lock(root.rstrip("/") + ".lock"):
        if os.path.isfile(os.path.join(root, READY)):
            return root
        work = tempfile.mkdtemp(prefix=".arm64-", dir=os.path.dirname(root.rstrip("/")))
        try:
            _make(work, progress)
            shutil.rmtree(root, ignore_errors=True)
            os.rename(work, root)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return root


def _make(work, progress):
    apt = ["-q", "-o", f"Dir::State={work}/apt", "-o", f"Dir::Cache={work}/apt", "-o", "Dir::State::status=/dev/null",
           "-o", "APT::Architecture=arm64", "-o", "APT::Architectures::=arm64"]
    os.makedirs(f"{work}/apt/lists/partial")
    os.makedirs(f"{work}/apt/archives/partial")
    _say(progress, "1/4 Debian's package lists for arm64")
    _run(["apt-get", *apt, "update"], "apt-get update (Debian's arm64 package lists)")
    _say(progress, f"2/4 an aarch64 Python 3.11: {len(PACKAGES)} Debian packages")
    os.makedirs(f"{work}/debs")
    _run(["apt-get", *apt, "download", *(f"{p}:arm64" if p != "media-types" else p for p in PACKAGES)],
         "apt-get download (the arm64 packages)", cwd=f"{work}/debs")
    for deb in sorted(os.listdir(f"{work}/debs")):
        _run(["dpkg-deb", "-x", f"{work}/debs/{deb}", f"{work}/sysroot"], f"dpkg-deb -x {deb}")
    versions = _versions()
    _say(progress, "3/4 the aarch64 wheels of " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    platforms = [flag for tag in _PLATFORMS for flag in ("--platform", tag)]
    _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", *platforms,
          "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", "-d", f"{work}/wheels",
          *(f"{k}=={v}" for k, v in versions.items())], "pip download (the aarch64 wheels)")
    for wheel in os.listdir(f"{work}/wheels"):
        with zipfile.ZipFile(f"{work}/wheels/{wheel}") as archive:
            archive.extractall(f"{work}/site")
    with open(f"{work}/child.py", "w") as f:
        f.write(CHILD)
    _say(progress, f"4/4 a sysroot for each core ({', '.join(CORES)}), each with its /proc/cpuinfo")
    for name, core in CORES.items():
        sysroot = f"{work}/cores/{name}"
        shutil.copytree(f"{work}/sysroot", sysroot, symlinks=True, copy_function=os.link)
        os.makedirs(f"{sysroot}/proc")
        with open(f"{sysroot}/proc/cpuinfo", "w") as f:
            f.write(f"processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: {core.features}\nCPU implementer\t: 0x41\n"
                    f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {core.part}\nCPU revision\t: 0\n\n")
        os.makedirs(f"{sysroot}/sys/devices/system/cpu")
        for entry in ("possible", "present", "online"):
            with open(f"{sysroot}/sys/devices/system/cpu/{entry}", "w") as f:
                f.write("0\n")
    shutil.rmtree(f"{work}/apt")
    shutil.rmtree(f"{work}/debs")
    with open(f"{work}/{READY}", "w") as f:
        json.dump({"versions": versions, "cores": list(CORES), "packages": list(PACKAGES)}, f)


def check_core(name):
    if name not in CORES:
        raise InputError(f"unknown ARM core {name!r}; accepted: {', '.join(CORES)}")
    return CORES[name]


class ArmRunner:
    """A .tflite file run by the aarch64 LiteRT on emulated core `core` (CORES), as export.runtimes' runners
    run one: float pixels in, float outputs back (the same conversions as LiteRTRunner's, done here). Runs
    every image of a batch in one emulated process (`run_all`: the emulator's start is seconds)."""

    def __init__(self, path, core="cortex-a76", root=None):
        from export.runtimes import LiteRTRunner

        self.core_name, self.core = core, check_core(core)
        self.root = provision(root)
        self.path = os.path.abspath(path)
        self.host = LiteRTRunner(path)  # (the file's tensors, and the x86 run it is compared with)
        self.runtime = f"litert aarch64 ({core}, emulated)"
        self.quantization, self.input_size = self.host.quantization, self.host.input_size
        self.info = {}

    def run_all(self, images):
        with tempfile.TemporaryDirectory() as work:
            np.savez(f"{work}/in.npz", x=np.stack([self.host.raw_input(image)[0] for image in images]))
            sysroot = f"{self.root}/cores/{self.core_name}"
            env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": f"{self.root}/site", "PYTHONNOUSERSITE": "1",
                   "HOME": work}
            started = time.time()
            result = subprocess.run([qemu(), "-cpu", self.core.qemu, "-L", sysroot, f"{sysroot}/usr/bin/python3.11",
                                     f"{self.root}/child.py", self.path, f"{work}/in.npz", f"{work}/out.npy"],
                                    capture_output=True, text=True, env=env)
            if result.returncode:
                raise InputError(f"{self.path} did not run in the aarch64 LiteRT on {self.core_name} (exit "
                                 f"{result.returncode}): {result.stderr.strip()[-600:]}")
            self.info = {**json.loads(result.stdout.strip().splitlines()[-1]),
                         "wall_seconds": round(time.time() - started, 1)}
            self.outputs = np.stack([self.host.from_output(y) for y in np.load(f"{work}/out.npy")])
            return self.outputs

    def __call__(self, image):
        return self.run_all(image[None])[0]


def check_targets(model, exported, samples, kind, thresholds, cores=DEFAULT_CORES, reference=None):
    """({core: what the file does on it}, failures): the file `exported` run on each emulated ARM core against
    `model` on `samples` (export.report.compare: its thresholds apply, failures named by core) and against
    the x86 run of `reference` (default the same file: the pixels and outputs that differ between the two
    CPUs' kernels)."""
    from export import report as reports
    from export.runtimes import LiteRTRunner

    x86_runner = LiteRTRunner(reference or exported)
    images = samples.images.astype(np.float32)
    x86 = np.stack([x86_runner(image) for image in images])
    x86_classes = reports.predicted_classes(x86, kind)
    results, failures = {}, []
    for name in cores:
        runner = ArmRunner(exported, name)
        numbers, (_, classes) = reports.compare(model, runner, samples, kind=kind)
        difference = np.abs(runner.outputs.astype(np.float64) - x86)
        results[name] = {"cpu": runner.core.about, "features": runner.core.features, "machine": runner.info["machine"],
                         "pixel_agreement": numbers["pixel_agreement"], "max_abs_error": numbers["max_abs_error"],
                         "miou_exported": numbers["miou_exported"], "miou_drop": numbers["miou_drop"],
                         "agreement_with_x86": float((classes == x86_classes).mean()),
                         "max_abs_difference_with_x86": float(difference.max()),
                         "outputs_differing_from_x86": float((difference > 0).mean()),
                         "seconds": runner.info["wall_seconds"]}
        failures += [f"arm64 {name}: {failure}" for failure in reports.check(numbers, thresholds)]
    return results, failures


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(prog="python -m export.arm64", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help=f"where to keep the runtime (default: {directory()})")
    args = parser.parse_args(argv)
    try:
        root = provision(args.root)
    except InputError as error:
        print(f"python -m export.arm64: error: {error}", file=sys.stderr)
        return 2
    print(f"arm64 runtime ready in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
