#!/usr/bin/env python3
"""The workload of scripts/soak.sh: a steady mix of file operations on a
mounted secrate tree, checked against a model kept in memory.

    soak-work.py run ROOT SECONDS SEED RATE MODEL COUNTER
    soak-work.py verify ROOT MODEL

`run` works in ROOT for SECONDS at about RATE operations per second
(creates, overwrites, in-place writes, appends, truncates, renames,
deletes, hard links, symlinks, xattrs, fsyncs, a few big files), keeping the
tree at a steady size so that what grows over a long run is the daemon's,
not the tree's. Every tenth operation reads a file back and compares it with
the model; a mismatch stops the run with exit 1. It also reads a random file
of a random snapshot under ROOT/.history (not compared: the model has no
history). COUNTER gets the number of operations done, rewritten every
second. At the end the model goes to MODEL (JSON).

`verify` compares ROOT (without .history) with MODEL exactly: the set of
names, each kind, file contents, symlink targets, xattrs in user.*, and
which names are hard links of one file. Exit 1 and the differences if any.
"""

import errno
import hashlib
import json
import os
import random
import sys
import time

DIRS = 16
MAX_FILES = 1500
MAX_BIG = 2
BIG_SIZE = (2 << 20, 12 << 20)


class Model:
    """Names → objects (an object is one inode: its bytes and xattrs)."""

    def __init__(self):
        self.names = {}  # relative path -> ("file", obj id) | ("link", target)
        self.objs = {}  # obj id -> {"data": bytearray, "xattr": {}}
        self.next = 0

    def new_obj(self, data):
        self.next += 1
        self.objs[self.next] = {"data": bytearray(data), "xattr": {}}
        return self.next

    def files(self):
        return [n for n, (k, _) in self.names.items() if k == "file"]

    def drop(self, name):
        kind, v = self.names.pop(name)
        if kind == "file" and not any(
            k == "file" and o == v for k, o in self.names.values()
        ):
            del self.objs[v]


def rand_bytes(rng, n):
    # Compressible and incompressible halves, so chunks dedup and compress
    # the way real data does.
    if rng.random() < 0.5:
        return rng.randbytes(n)
    word = rng.randbytes(rng.randint(1, 64))
    return (word * (n // len(word) + 1))[:n]


def run(root, seconds, seed, rate, model_path, counter_path):
    rng = random.Random(seed)
    m = Model()
    for d in range(DIRS):
        os.makedirs(os.path.join(root, f"d{d:02}"), exist_ok=True)
    big = []
    ops = 0
    start = time.monotonic()
    last_count = 0.0
    hist = os.path.join(root, ".history")

    def path(name):
        return os.path.join(root, name)

    def fresh_name():
        return f"d{rng.randrange(DIRS):02}/f{rng.randrange(1 << 30):x}"

    def check(name):
        kind, v = m.names[name]
        if kind == "link":
            got = os.readlink(path(name))
            want = v
        else:
            with open(path(name), "rb") as f:
                got = f.read()
            want = bytes(m.objs[v]["data"])
        if got != want:
            sys.exit(f"soak: {name} reads back wrong after {ops} operations "
                     f"({len(got)} bytes, expected {len(want)})")

    while True:
        now = time.monotonic()
        if now - start >= seconds:
            break
        if now - last_count >= 1:
            with open(counter_path + ".tmp", "w") as f:
                f.write(f"{ops}\n")
            os.replace(counter_path + ".tmp", counter_path)
            last_count = now
        # Keep to RATE on average.
        ahead = ops / rate - (now - start)
        if ahead > 0:
            time.sleep(min(ahead, 0.5))
        ops += 1
        files = m.files()
        r = rng.random()
        try:
            if not files or (r < 0.30 and len(m.names) < MAX_FILES):
                name = fresh_name()
                if name in m.names:
                    continue
                data = rand_bytes(rng, rng.choice([0, 1, 100, 4096, 20000, 70000]))
                with open(path(name), "wb") as f:
                    f.write(data)
                m.names[name] = ("file", m.new_obj(data))
            elif r < 0.40:
                name = rng.choice(files)
                data = rand_bytes(rng, rng.randint(0, 70000))
                with open(path(name), "wb") as f:
                    f.write(data)
                m.objs[m.names[name][1]]["data"] = bytearray(data)
            elif r < 0.52:
                name = rng.choice(files)
                obj = m.objs[m.names[name][1]]
                at = rng.randint(0, len(obj["data"]) + 100)
                data = rand_bytes(rng, rng.randint(1, 9000))
                with open(path(name), "r+b") as f:
                    f.seek(at)
                    f.write(data)
                d = obj["data"]
                if at > len(d):
                    d.extend(b"\0" * (at - len(d)))
                d[at:at + len(data)] = data
            elif r < 0.58:
                name = rng.choice(files)
                data = rand_bytes(rng, rng.randint(1, 5000))
                with open(path(name), "ab") as f:
                    f.write(data)
                m.objs[m.names[name][1]]["data"].extend(data)
            elif r < 0.61:
                name = rng.choice(files)
                n = rng.randint(0, 30000)
                os.truncate(path(name), n)
                d = m.objs[m.names[name][1]]["data"]
                if n < len(d):
                    del d[n:]
                else:
                    d.extend(b"\0" * (n - len(d)))
            elif r < 0.70:
                name = rng.choice(list(m.names))
                to = fresh_name()
                if to in m.names:
                    continue
                os.rename(path(name), path(to))
                m.names[to] = m.names.pop(name)
                big = [to if b == name else b for b in big]
            elif r < 0.80 and len(m.names) > MAX_FILES // 2:
                name = rng.choice(list(m.names))
                os.unlink(path(name))
                m.drop(name)
            elif r < 0.83:
                name = rng.choice(files)
                to = fresh_name()
                if to in m.names:
                    continue
                os.link(path(name), path(to))
                m.names[to] = m.names[name]
            elif r < 0.85:
                to = fresh_name()
                if to in m.names:
                    continue
                target = rng.choice(["../x", "nowhere", rng.choice(list(m.names))])
                os.symlink(target, path(to))
                m.names[to] = ("link", target)
            elif r < 0.88:
                name = rng.choice(files)
                key = f"user.k{rng.randrange(4)}"
                obj = m.objs[m.names[name][1]]
                if rng.random() < 0.25 and key in obj["xattr"]:
                    os.removexattr(path(name), key)
                    del obj["xattr"][key]
                else:
                    val = rng.randbytes(rng.randint(0, 200))
                    os.setxattr(path(name), key, val)
                    obj["xattr"][key] = val.hex()
            elif r < 0.93:
                name = rng.choice(files)
                fd = os.open(path(name), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            elif r < 0.932:
                if len(big) >= MAX_BIG:
                    name = big.pop(0)
                    os.unlink(path(name))
                    m.drop(name)
                else:
                    name = fresh_name()
                    if name in m.names:
                        continue
                    data = rand_bytes(rng, rng.randint(*BIG_SIZE))
                    with open(path(name), "wb") as f:
                        f.write(data)
                        os.fsync(f.fileno())
                    m.names[name] = ("file", m.new_obj(data))
                    big.append(name)
            else:
                # A look into an old snapshot: listing and one file.
                snaps = [s for s in os.listdir(hist) if s != "latest"]
                if snaps:
                    snap = os.path.join(hist, rng.choice(snaps))
                    d = os.path.join(snap, f"d{rng.randrange(DIRS):02}")
                    names = os.listdir(d) if os.path.isdir(d) else []
                    if names:
                        p = os.path.join(d, rng.choice(names))
                        if os.path.isfile(p) and not os.path.islink(p):
                            with open(p, "rb") as f:
                                f.read()
        except OSError as e:
            if e.errno == errno.ENOENT and r >= 0.932:
                # A snapshot forgotten by retention while we looked.
                continue
            sys.exit(f"soak: operation {ops} failed: {e}")
        big = [b for b in big if b in m.names]
        if ops % 10 == 0 and m.names:
            check(rng.choice(list(m.names)))

    for name in m.names:
        check(name)
    out = {"names": {}, "objs": {}}
    for name, (kind, v) in m.names.items():
        if kind == "link":
            out["names"][name] = ["link", v]
        else:
            out["names"][name] = ["file", v]
            o = m.objs[v]
            out["objs"][str(v)] = {
                "sha256": hashlib.sha256(o["data"]).hexdigest(),
                "size": len(o["data"]),
                "xattr": o["xattr"],
            }
    with open(model_path, "w") as f:
        json.dump(out, f)
    with open(counter_path, "w") as f:
        f.write(f"{ops}\n")
    print(f"soak: {ops} operations, {len(m.names)} names, all read back right")


def verify(root, model_path):
    with open(model_path) as f:
        want = json.load(f)
    bad = []
    seen = {}
    inode_of = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root:
            dirnames[:] = [d for d in dirnames if d != ".history"]
        for n in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = os.path.join(dirpath, n)
            seen[os.path.relpath(p, root)] = p
    for name in sorted(set(seen) | set(want["names"])):
        if name not in seen:
            bad.append(f"missing: {name}")
            continue
        if name not in want["names"]:
            bad.append(f"unexpected: {name}")
            continue
        p = seen[name]
        kind, v = want["names"][name]
        if kind == "link":
            if not os.path.islink(p) or os.readlink(p) != v:
                bad.append(f"symlink differs: {name}")
            continue
        o = want["objs"][str(v)]
        st = os.lstat(p)
        with open(p, "rb") as f:
            got = hashlib.sha256(f.read()).hexdigest()
        if got != o["sha256"] or st.st_size != o["size"]:
            bad.append(f"content differs: {name}")
        xa = {k: os.getxattr(p, k).hex() for k in os.listxattr(p) if k.startswith("user.")}
        if xa != o["xattr"]:
            bad.append(f"xattrs differ: {name}")
        key = (st.st_dev, st.st_ino)
        if v in inode_of and inode_of[v] != key:
            bad.append(f"hard link broken: {name}")
        inode_of.setdefault(v, key)
    links = {}
    for v, key in inode_of.items():
        links.setdefault(key, []).append(v)
    bad += [f"two files share an inode: {vs}" for vs in links.values() if len(vs) > 1]
    if bad:
        print("\n".join(bad[:50]))
        sys.exit(f"soak: {len(bad)} differences between {root} and the model")
    print(f"soak: {root} matches the model ({len(seen)} names)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["run"] and len(sys.argv) == 8:
        run(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]),
            sys.argv[6], sys.argv[7])
    elif sys.argv[1:2] == ["verify"] and len(sys.argv) == 4:
        verify(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
