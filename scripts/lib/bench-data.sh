# shellcheck shell=bash
# Data generators for scripts/bench.sh (python3, deterministic).
#
#   bench_gen_tree DEST DIRS FILES_PER_DIR MIN_BYTES MAX_BYTES SEED
#       DIRS x FILES_PER_DIR files named dNNNN/fNNNN, text-like content
#       (words from a fixed vocabulary, so it compresses about like source
#       code; every file different)
#   bench_mutate_tree DIR VERSION
#       the next version of a source tree: 2 % of the files get a line
#       inserted in the middle, 0.2 % are new (edited copies of others),
#       0.2 % are deleted; every 5th version renames one directory
#   bench_random_file PATH BYTES     from /dev/urandom, once

bench_gen_tree() {
    python3 - "$@" <<'EOF'
import os, random, sys
dest, ndirs, nfiles, lo, hi, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
rng = random.Random(seed)
vocab = [''.join(rng.choice('abcdefghijklmnopqrstuvwxyz_') for _ in range(rng.randint(2, 10))) for _ in range(4000)]
vocab += ['{', '}', '(', ')', ';', '=', 'int', 'return', 'if', 'static', 'struct', '*', '->', '0', '1']
for d in range(ndirs):
    dp = os.path.join(dest, 'd%04d' % d)
    os.makedirs(dp, exist_ok=True)
    for f in range(nfiles):
        n = rng.randint(lo, hi)
        words = []
        size = 0
        header = 'file %d/%d seed %d\n' % (d, f, seed)
        while size < n:
            w = rng.choice(vocab)
            words.append(w)
            size += len(w) + 1
        body = header + ' '.join(words)
        # line breaks every ~10 words
        out = []
        for i, w in enumerate(body.split(' ')):
            out.append(w)
            out.append('\n' if i % 10 == 9 else ' ')
        with open(os.path.join(dp, 'f%04d' % f), 'w') as fh:
            fh.write(''.join(out)[:max(n, len(header))])
EOF
}

bench_mutate_tree() {
    python3 - "$@" <<'EOF'
import os, random, sys
root, version = sys.argv[1], int(sys.argv[2])
rng = random.Random(1000 + version)
files = []
for dp, dns, fns in os.walk(root):
    dns.sort()
    for fn in sorted(fns):
        p = os.path.join(dp, fn)
        if os.path.isfile(p) and not os.path.islink(p):
            files.append(p)
files.sort()
n = len(files)
mod = rng.sample(files, max(1, n // 50))
for p in mod:
    with open(p, 'rb') as fh:
        lines = fh.read().split(b'\n')
    lines.insert(len(lines) // 2, b'/* secrate-bench: version %d edit */' % version)
    with open(p, 'wb') as fh:
        fh.write(b'\n'.join(lines))
for i, p in enumerate(rng.sample(files, max(1, n // 500))):
    with open(p, 'rb') as fh:
        data = fh.read()
    cut = len(data) // 3
    with open(os.path.join(os.path.dirname(p), 'bench-new-%d-%d.c' % (version, i)), 'wb') as fh:
        fh.write(data[:cut] + b'\n/* new in version %d */\n' % version + data[cut:])
gone = set(mod)
for p in rng.sample([f for f in files if f not in gone], max(1, n // 500)):
    os.unlink(p)
if version % 5 == 0:
    dirs = sorted(dp for dp, dns, fns in os.walk(root) if dp != root and len(fns) > 5)
    if dirs:
        d = rng.choice(dirs)
        os.rename(d, d + '-v%d' % version)
EOF
}

bench_random_file() {
    local path="$1" bytes="$2"
    [[ -e "$path.complete" ]] && return 0
    bench_log "generating $bytes random bytes in $path"
    mkdir -p "$(dirname "$path")"
    head -c "$bytes" /dev/urandom >"$path"
    sync
    touch "$path.complete"
}
