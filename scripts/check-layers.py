#!/usr/bin/python3
"""check-layers.py: every module calls only its own layer and the layers below.

The layer table below is the one place the architecture is written down (the
README's picture follows it).  Two checks:

  includes  src/X.c and include/X.h may include only headers of modules in
            X's layer or below.
  symbols   (stronger: a declaration can sit in a low header while its
            definition lives in a high module) nm over the core library's
            objects and main.c's: every symbol a module uses that another
            module defines must be defined in the same layer or below.

Each violation prints as `src/a.c (layer N) -> b (layer M): what` and the
script exits 1.  A module missing from the table, or in two layers, is an
error too (exit 2): a new file says where it belongs.

Usage: check-layers.py [--source DIR] [--build DIR] [--no-symbols]
"""
import argparse
import glob
import os
import re
import subprocess
import sys

# Lowest first.  A module may call its own layer and every layer below; a
# lower layer reaches a higher one only through a callback registered once at
# start-up, all of them in src/wiring.c (runtime's janitors, free lists and
# shutdown/reload requests, the mailbox's handlers, the pool's router, the
# database's health checks, discovery's on_change, the client's console).
# discovery sits in I/O: a resolver that reports changed answers.
# peers sits in policy: it decides who is in the fleet (from discovery's
# answers and its own pings) and where a cancel goes (cancel, below it);
# the front ends show it, cancel reaches it through a callback.
LAYERS = [
    ("foundations", """log list iobuf intern proto scram params prepared
        sqlinspect sqlroute table config config_ini config_env authfile
        hba runtime"""),
    ("I/O", "conn batch tls mailbox discovery"),
    ("model", "stats metrics database pool server client auth authquery cancel txn"),
    ("policy", "router health peers"),
    ("front ends", "listener admin http"),
    ("process", "worker shutdown signals reload confwatch wiring main"),
]

INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)\.h"', re.M)


def layer_table():
    table = {}
    problems = []
    for n, (_, names) in enumerate(LAYERS):
        for m in names.split():
            if m in table:
                problems.append("module %s is in layers %d and %d" % (m, table[m], n))
            table[m] = n
    return table, problems


def modules_in_tree(src):
    mods = set()
    for p in glob.glob(os.path.join(src, "src", "*.c")) + \
            glob.glob(os.path.join(src, "include", "*.h")):
        mods.add(os.path.splitext(os.path.basename(p))[0])
    return mods


def check_includes(src, table):
    out = []
    files = sorted(glob.glob(os.path.join(src, "src", "*.c"))) + \
        sorted(glob.glob(os.path.join(src, "include", "*.h")))
    for path in files:
        mod = os.path.splitext(os.path.basename(path))[0]
        rel = os.path.relpath(path, src)
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        for inc in INCLUDE_RE.findall(text):
            target = os.path.basename(inc)
            if target not in table or target == mod:
                continue  # version.h and the like: generated, no module
            if table[target] > table[mod]:
                out.append("%s (layer %d) -> %s (layer %d): #include \"%s.h\"" %
                           (rel, table[mod], target, table[target], inc))
    return out


def nm_symbols(obj):
    """(defined, undefined) global symbol names of one object file."""
    res = subprocess.run(["nm", "-P", obj], capture_output=True, text=True, check=True)
    defined, undefined = set(), set()
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        name, kind = parts[0], parts[1]
        if kind == "U":
            undefined.add(name)
        elif kind.isupper() or kind in ("v", "w"):
            defined.add(name)
    return defined, undefined


def check_symbols(build, table):
    objs = sorted(glob.glob(os.path.join(build, "libpgfleet_core.a.p", "*.c.o")))
    objs += sorted(glob.glob(os.path.join(build, "pgfleet.p", "src_main.c.o")))
    if not objs:
        return None
    mod_of = {}
    uses = {}
    owner = {}
    for obj in objs:
        base = os.path.basename(obj)
        m = re.match(r"src_(.+)\.c\.o$", base)
        if not m:
            continue
        mod = m.group(1)
        mod_of[obj] = mod
        defined, undefined = nm_symbols(obj)
        uses[mod] = undefined
        for s in defined:
            owner.setdefault(s, mod)
    out = []
    for mod in sorted(uses):
        if mod not in table:
            continue
        for s in sorted(uses[mod]):
            o = owner.get(s)
            if o is None or o == mod or o not in table:
                continue
            if table[o] > table[mod]:
                out.append("src/%s.c (layer %d) -> %s (layer %d): %s" %
                           (mod, table[mod], o, table[o], s))
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", default=os.path.dirname(here))
    ap.add_argument("--build", default=None,
                    help="meson build directory (default: SOURCE/build)")
    ap.add_argument("--no-symbols", action="store_true",
                    help="check #include lines only (no build needed)")
    args = ap.parse_args()
    build = args.build or os.path.join(args.source, "build")

    table, problems = layer_table()
    for m in sorted(modules_in_tree(args.source) - set(table)):
        problems.append("module %s (src/%s.c or include/%s.h) is in no layer: "
                        "add it to LAYERS in scripts/check-layers.py" % (m, m, m))
    if problems:
        for p in problems:
            print("check-layers: " + p)
        return 2

    violations = check_includes(args.source, table)
    if not args.no_symbols:
        sym = check_symbols(build, table)
        if sym is None:
            print("check-layers: no objects under %s (build first, or --no-symbols)" % build)
            return 2
        violations += sym
    for v in violations:
        print(v)
    if violations:
        print("check-layers: %d call(s) go up a layer" % len(violations))
        return 1
    print("check-layers: ok (%d layers: %s)" %
          (len(LAYERS), " -> ".join(name for name, _ in LAYERS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
