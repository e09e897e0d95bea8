"""cffi build script for the C core (API mode, out of line): `viewbox._core`.

The cdef is csrc/viewbox.h itself, minus its preprocessor lines, so the
header and the binding can never drift apart. Set VIEWBOX_SANITIZE=1 at build
time for an AddressSanitizer/UBSan build; the interpreter is not built with
ASan, so its runtime must be loaded first: run it with
LD_PRELOAD=$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)
and ASAN_OPTIONS=detect_leaks=0 (Python itself keeps memory until exit);
.ci/run's sanitizer job is the reference.
"""
import os
import pathlib
import re

from cffi import FFI

ROOT = pathlib.Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
_INT_DEFINE = re.compile(r"^#define\s+VB_\w+\s+\d+\s*(/\*.*\*/)?\s*$")


def _cdef_from_header(text: str) -> str:
    keep = []
    for line in text.splitlines():
        if line.startswith("#"):
            if _INT_DEFINE.match(line):
                keep.append(re.sub(r"/\*.*\*/", "", line))
            continue
        keep.append(line)
    return "\n".join(keep)


CFLAGS = ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter",
          "-fno-strict-aliasing", "-D_GNU_SOURCE"]
LDFLAGS: list[str] = []
if os.environ.get("VIEWBOX_SANITIZE"):
    # UB stops the process that hit it, as an ASan report does: a sandbox's init, broker and
    # forwarder have their stderr inside the sandbox, where a report that went on would go unseen.
    CFLAGS += ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer",
               "-O1"]
    LDFLAGS += ["-fsanitize=address,undefined"]

ffibuilder = FFI()
ffibuilder.cdef(_cdef_from_header((CSRC / "viewbox.h").read_text()))
ffibuilder.set_source(
    "viewbox._core",
    '#include "viewbox.h"\n',
    sources=[os.path.relpath(p, ROOT) for p in sorted(CSRC.glob("*.c"))],
    include_dirs=[os.path.relpath(CSRC, ROOT)],
    extra_compile_args=CFLAGS,
    extra_link_args=LDFLAGS,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
