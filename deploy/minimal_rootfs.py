"""Assemble the root filesystem of the minimal image: what hookd runs with, nothing else.

Run inside the image build (the Dockerfile's ``rootfs`` stage), by the base image's Python,
after the venv is at /opt/hookd::

    python deploy/minimal_rootfs.py /rootfs

It copies the interpreter the venv points at, its standard library without the parts no server
needs (tests, IDLE, Tk, ensurepip, lib2to3, the pydoc data, curses, dbm), the venv without pip,
tests, C sources and type stubs (its extension modules stripped of debug symbols), every shared
library that an ELF file among those loads (as ``ldd`` resolves it, with the dynamic loader),
the CA bundle (TLS to Quix Cloud or a Kafka cluster) and an /etc/passwd naming the hookd user.
No shell, no package manager, no pip: the distroless idea, from the base image's own Debian
packages. Then it checks the result by importing hookd inside it with ``chroot``: a missing
file fails the build, not the first start.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

VENV = Path("/opt/hookd")
UID = 10001
#: Standard library parts a webhook server never imports.
STDLIB_SKIP = frozenset(
    {
        "test",
        "idlelib",
        "tkinter",
        "turtledemo",
        "ensurepip",
        "lib2to3",
        "pydoc_data",
        "venv",
        "site-packages",
        "dist-packages",
        "config-3.11-x86_64-linux-gnu",
        "config-3.11-aarch64-linux-gnu",
    }
)
STDLIB_SKIP_DIRS_TOO = frozenset({"curses", "dbm"})
#: Extension modules for terminals, old databases and sound, with the libraries they pull in.
STDLIB_SKIP_FILES = (
    "_tkinter",
    "_test",
    "xxlimited",
    "_xxtestfuzz",
    "_ctypes_test",
    "_curses",
    "readline",
    "_dbm",
    "_gdbm",
    "nis",
    "ossaudiodev",
    "spwd",
    "_crypt",
    "audioop",
)
#: Inside the venv's packages: what only building or testing them uses.
VENV_SKIP_DIRS = frozenset({"tests", "test", "pip", "setuptools"})
VENV_SKIP_SUFFIXES = (".c", ".h", ".pyx", ".pxd", ".pxi", ".pyi", ".cpp", ".hpp")
CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt",)


def copy(path: Path, root: Path) -> None:
    """Copy one file (or symlink, and what it points at) to the same path under ``root``."""
    target = root / path.relative_to("/")
    if target.exists() or target.is_symlink():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        link = os.readlink(path)
        target.symlink_to(link)
        copy(Path(os.path.normpath(path.parent / link)), root)  # one link at a time
    else:
        shutil.copy2(path, target)


def copy_tree(source: Path, root: Path, *, skip_dir, skip_file) -> None:
    for directory, dirnames, filenames in os.walk(source):
        dirnames[:] = [d for d in dirnames if not skip_dir(d)]
        for name in filenames:
            if not skip_file(name):
                copy(Path(directory) / name, root)


def is_elf(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            return file.read(4) == b"\x7fELF"
    except OSError:
        return False


def shared_libraries(elf: Path) -> set[Path]:
    """What the dynamic loader maps for ``elf``, as ``ldd`` resolves it."""
    out = subprocess.run(["ldd", str(elf)], capture_output=True, text=True, check=False).stdout
    found: set[Path] = set()
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts:
            index = parts.index("=>") + 1
            if index < len(parts) and parts[index].startswith("/"):
                found.add(Path(parts[index]))
        elif parts and parts[0].startswith("/"):
            found.add(Path(parts[0]))  # the dynamic loader itself
        if "not found" in line:
            sys.exit(f"minimal_rootfs: {elf} needs a library that is not installed: {line}")
    return found


def main(root: Path) -> None:
    interpreter = Path(os.path.realpath(VENV / "bin" / "python"))
    copy(interpreter, root)
    for name in ("python", "python3", "python3.11"):  # the venv's links to it
        copy(VENV / "bin" / name, root)

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    copy_tree(
        stdlib,
        root,
        skip_dir=lambda d: d in STDLIB_SKIP or d in STDLIB_SKIP_DIRS_TOO,
        skip_file=lambda f: f.startswith(STDLIB_SKIP_FILES),
    )
    copy_tree(
        VENV,
        root,
        skip_dir=lambda d: d in VENV_SKIP_DIRS,
        skip_file=lambda f: f.endswith(VENV_SKIP_SUFFIXES),
    )

    elves = [
        p for p in (root / "opt").rglob("*") if not p.is_symlink() and p.is_file() and is_elf(p)
    ]
    # The wheels' extension modules carry their debug symbols (uvloop's alone are ~11 MB);
    # --strip-unneeded keeps every symbol the dynamic loader resolves.
    if shutil.which("strip"):
        subprocess.run(["strip", "--strip-unneeded", *map(str, elves)], check=True)
    else:
        print("minimal_rootfs: no strip (binutils): extension modules keep their symbols")
    elves += [p for p in (root / stdlib.relative_to("/")).rglob("*.so") if p.is_file()]
    elves.append(root / interpreter.relative_to("/"))
    libraries: set[Path] = set()
    for elf in elves:
        libraries |= shared_libraries(elf)
    for library in sorted(libraries):
        if not library.is_relative_to(root):  # the venv's own, found through $ORIGIN
            copy(library, root)
    for bundle in CA_BUNDLES:
        if Path(bundle).exists():
            copy(Path(bundle), root)

    etc = root / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "passwd").write_text(
        f"root:x:0:0:root:/root:/nonexistent\nhookd:x:{UID}:{UID}:hookd:/nonexistent:/nonexistent\n"
    )
    (etc / "group").write_text(f"root:x:0:\nhookd:x:{UID}:\n")
    for directory in ("var/lib/hookd", "etc/hookd", "tmp"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    os.chown(root / "var/lib/hookd", UID, UID)
    (root / "tmp").chmod(0o1777)

    # The proof: hookd imports and answers --help inside the tree, with nothing else around.
    subprocess.run(
        ["chroot", str(root), "/opt/hookd/bin/python", "-c", "import hookd.app, hookd.cli"],
        check=True,
    )
    subprocess.run(
        ["chroot", str(root), "/opt/hookd/bin/hookd", "--help"],
        check=True,
        stdout=subprocess.DEVNULL,
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
