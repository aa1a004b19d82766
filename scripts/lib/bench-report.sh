# shellcheck shell=bash
# bench_report OUT: summary of OUT/results.csv (scripts/bench.sh) and of any
# OUT/bench-backup-*.csv (scripts/bench-backup.sh): OUT/summary.json,
# OUT/summary.md (printed), OUT/*.png charts when gnuplot is installed.
# Medians with min-max; ratios secrate / peer; each target of the issue
# "Performance" met or missed.

bench_report() {
    python3 - "$1" <<'EOF'
import csv, glob, json, os, statistics, subprocess, sys, shutil

out = sys.argv[1]
rows = []
p = os.path.join(out, 'results.csv')
if os.path.exists(p):
    with open(p) as fh:
        for r in csv.DictReader(fh):
            try:
                r['value'] = float(r['value'])
            except ValueError:
                continue
            rows.append(r)
# bench-backup.sh results become workload p3.
for p in sorted(glob.glob(os.path.join(out, 'bench-backup-*.csv'))):
    with open(p) as fh:
        for r in csv.DictReader(fh):
            if r.get('kept', 'yes') != 'yes' or r['rc'] != '0':
                continue
            case = r['dataset'] + ('' if r['phase'] == 'first' else '_unchanged')
            for metric, col, unit, scale in (('wall_s', 'wall_s', 's', 1), ('mb_per_s', 'mb_per_s', 'MB/s', 1),
                                             ('peak_rss_mib', 'peak_rss_kib', 'MiB', 1 / 1024), ('store_bytes', 'store_bytes', 'B', 1)):
                if r['phase'] != 'first' and metric in ('mb_per_s', 'store_bytes'):
                    continue
                rows.append(dict(workload='p3', case=case, tool=r['tool'], run=r['run'], metric=metric,
                                 value=float(r[col]) * scale, unit=unit, others_cpu_pct=r.get('others_cpu_pct', '')))

groups = {}
for r in rows:
    groups.setdefault((r['workload'], r['case'], r['tool'], r['metric']), []).append(r)
order = ['ceil', 'p1', 'p2', 'p3', 'p4', 'p5', 'p6', 'p8', 'p7', 'history']
stats = []
for k, rs in groups.items():
    vals = [r['value'] for r in rs]
    oth = [float(r['others_cpu_pct']) for r in rs if r.get('others_cpu_pct') not in (None, '')]
    stats.append(dict(workload=k[0], case=k[1], tool=k[2], metric=k[3], unit=rs[0]['unit'], n=len(vals),
                      median=statistics.median(vals), min=min(vals), max=max(vals),
                      others_cpu_pct_max=max(oth) if oth else None))
stats.sort(key=lambda s: (order.index(s['workload']) if s['workload'] in order else 99, s['case'], s['tool'], s['metric']))
S = {(s['workload'], s['case'], s['tool'], s['metric']): s['median'] for s in stats}

def g(*k):
    return S.get(k)

def ratio(a, b):
    return a / b if a is not None and b else None

targets = []
def target(name, measured, limit, op, detail):
    ok = None
    if measured is not None:
        ok = measured <= limit if op == '<=' else measured >= limit if op == '>=' else measured < limit
    targets.append(dict(target=name, measured=measured, limit=limit, op=op, met=ok, detail=detail))

for step in ('untar', 'md5sum', 'ls_lR', 'rm_rf'):
    sec, gc, pl = g('p1', step, 'secrate', 'wall_s'), g('p1', step, 'gocryptfs', 'wall_s'), g('p1', step, 'plain', 'wall_s')
    if sec is None:
        continue
    mf = g('p1', step, 'memfs', 'wall_s')
    d = 'secrate %.2f s, gocryptfs %s s, plain %s s, in-memory FUSE %s s' % (
        sec, *['%.2f' % x if x else 'n/a' for x in (gc, pl, mf)])
    target('P1 %s: secrate / gocryptfs' % step, ratio(sec, gc), 0.5, '<=', d)
    target('P1 %s: secrate / plain' % step, ratio(sec, pl), 3, '<=', d)
    if mf:
        targets.append(dict(target='P1 %s: secrate / in-memory FUSE ceiling' % step, measured=ratio(sec, mf), limit=None,
                            op='', met=None, detail='secrate %.2f s, in-memory FUSE filesystem %.2f s (%.2f× plain)'
                            % (sec, mf, ratio(mf, pl) or 0)))
# The cold read of the local copy (remounted, caches dropped) is the one
# that compares with a plain directory and gocryptfs (remounted on its
# cipher directory); the read through a fresh cache comes from the store.
for case, sec_case, lim in (('write', 'write', 0.9), ('read_cold', 'read_cold_cache_kept', 0.8)):
    sec, pl, gc = g('p2', sec_case, 'secrate', 'mb_per_s'), g('p2', case, 'plain', 'mb_per_s'), g('p2', case, 'gocryptfs', 'mb_per_s')
    nf = g('ceil', 'fuse_' + case, 'nullfs', 'mb_per_s')
    if sec is not None:
        target('P2 %s: secrate / plain (MB/s)' % case, ratio(sec, pl), lim, '>=',
               'secrate %.0f MB/s, plain %s, gocryptfs %s, no-op FUSE %s' % (sec, *['%.0f' % x if x else 'n/a' for x in (pl, gc, nf)]))
        if nf:
            targets.append(dict(target='P2 %s: secrate / no-op FUSE ceiling' % case, measured=ratio(sec, nf), limit=None,
                                op='', met=None, detail='secrate %.0f MB/s, no-op FUSE filesystem %.0f MB/s' % (sec, nf)))
fresh, pl = g('p2', 'read_cold', 'secrate', 'mb_per_s'), g('p2', 'read_cold', 'plain', 'mb_per_s')
if fresh is not None:
    targets.append(dict(target='P2 read from the store (fresh cache): secrate / plain', measured=ratio(fresh, pl), limit=None,
                        op='', met=None, detail='secrate %.0f MB/s through an empty cache (fetch, decrypt, verify, decompress)' % fresh))
for ds in ('random', 'source'):
    sec, rs = g('p3', ds, 'secrate', 'mb_per_s'), g('p3', ds, 'restic', 'mb_per_s')
    if sec is None:
        continue
    rn, bo = g('p3', ds, 'restic-nocomp', 'mb_per_s'), g('p3', ds, 'borg', 'mb_per_s')
    d = 'secrate %.0f MB/s, restic %s, restic no comp. %s, borg %s' % (sec, *['%.0f' % x if x else 'n/a' for x in (rs, rn, bo)])
    target('P3 %s: secrate / restic throughput' % ds, ratio(sec, rs), 2, '>=', d)
    target('P3 %s: secrate MB/s' % ds, sec, 600, '>=', d)
    ss, sn = g('p3', ds, 'secrate', 'store_bytes'), g('p3', ds, 'restic-nocomp', 'store_bytes')
    if ds == 'random':
        target('P3 random: store / restic no compression', ratio(ss, sn), 1.0, '<=', 'secrate %.0f MB, restic %.0f MB' % ((ss or 0) / 1e6, (sn or 0) / 1e6))
    su, ru = g('p3', ds + '_unchanged', 'secrate', 'wall_s'), g('p3', ds + '_unchanged', 'restic', 'wall_s')
    if su is not None:
        targets.append(dict(target='P3 %s: unchanged re-run secrate / restic' % ds, measured=ratio(su, ru), limit=None,
                            op='', met=None, detail='secrate %.2f s, restic %s s' % (su, '%.2f' % ru if ru else 'n/a')))
vers = sorted({s['case'] for s in stats if s['workload'] == 'p4' and s['case'].startswith('v')}, key=lambda c: int(c[1:]))
if vers:
    last = vers[-1]
    sec, rs, bo = (g('p4', last, t, 'store_bytes') for t in ('secrate', 'restic', 'borg'))
    d = 'after %d versions: secrate %.0f MB, restic %.0f MB, borg %.0f MB' % (len(vers), sec / 1e6, (rs or 0) / 1e6, (bo or 0) / 1e6)
    target('P4 store: secrate / borg', ratio(sec, bo), 1.0, '<=', d)
    target('P4 store: secrate / restic', ratio(sec, rs), 1.15, '<=', d)
seal = g('p5', 'seal_1_change', 'secrate', 'wall_s')
if seal is not None:
    target('P5 seal after 1 change (s)', seal, 1.0, '<', '`secrate snapshot` in a 100k-file mount')
    ri = g('p5', 'backup_1_change', 'restic', 'wall_s')
    target('P5 seal / restic incremental backup', ratio(seal, ri), 0.1, '<=',
           'seal %.2f s, restic incremental %s s' % (seal, '%.2f' % ri if ri else 'n/a'))
sb, rb = g('p5', 'backup_1_change', 'secrate', 'wall_s'), g('p5', 'backup_1_change', 'restic', 'wall_s')
if sb is not None:
    target('P5 secrate backup / restic backup, 1 change', ratio(sb, rb), 0.1, '<=',
           'secrate %.2f s, restic %s s, borg %s s' % (sb, '%.2f' % rb if rb else 'n/a',
                                                       '%.2f' % g('p5', 'backup_1_change', 'borg', 'wall_s') if g('p5', 'backup_1_change', 'borg', 'wall_s') else 'n/a'))
sf, rf = g('p6', 'first_byte_total', 'secrate', 'wall_s'), g('p6', 'first_byte_total', 'restic', 'wall_s')
if sf is not None:
    target('P6 first byte, old snapshot, cold: secrate / restic', ratio(sf, rf), 0.1, '<=',
           'secrate %.2f s (mount included), restic %s s' % (sf, '%.2f' % rf if rf else 'n/a'))
pl, rs = g('p8', 'read_snapshot', 'plain', 'wall_s'), g('p8', 'read_snapshot', 'restic', 'wall_s')
for where in ('file', 's3'):
    sec = g('p8', 'read_snapshot', 'secrate-' + where, 'wall_s')
    if sec is None:
        continue
    d = 'secrate (%s store) %.2f s, restic mount %s s, plain directory %s s' % (
        where, sec, *['%.2f' % x if x else 'n/a' for x in (rs, pl)])
    for name, base in (('restic mount', rs), ('plain', pl)):
        targets.append(dict(target='P8 whole old snapshot, empty cache, %s store: secrate / %s' % (where, name),
                            measured=ratio(sec, base), limit=None, op='', met=None, detail=d))
for case in ('mount_serving', 'backup'):
    sm, rm = g('p7', case, 'secrate', 'peak_rss_mib'), g('p7', case, 'restic', 'peak_rss_mib')
    if sm is None:
        continue
    files = g('p7', 'tree', 'info', 'files')
    d = '%s files: secrate %.0f MiB, restic %s MiB' % ('%.0f' % files if files else '?', sm, '%.0f' % rm if rm else 'n/a')
    target('P7 %s peak RSS (MiB)' % case, sm, 200, '<=', d)
    target('P7 %s peak RSS secrate / restic' % case, ratio(sm, rm), 0.25, '<=', d)

with open(os.path.join(out, 'summary.json'), 'w') as fh:
    json.dump(dict(results=stats, targets=targets), fh, indent=1)

def fmt(v):
    if v is None:
        return 'n/a'
    if abs(v) >= 1e6:
        return '%.0f' % v
    if abs(v) >= 100:
        return '%.0f' % v
    if abs(v) >= 10:
        return '%.1f' % v
    return '%.3g' % v

lines = ['# secrate benchmark summary', '', 'Results: `%s`' % out, '']
for m in sorted(glob.glob(os.path.join(out, 'machine-*.txt')))[-1:]:
    lines += ['```'] + open(m).read().rstrip().split('\n') + ['```', '']
lines += ['## Targets', '', '| target | measured | target | verdict | detail |', '|---|---|---|---|---|']
for t in targets:
    v = '—' if t['met'] is None else ('met' if t['met'] else '**missed**')
    lim = '' if t['limit'] is None else '%s %s' % (t['op'], fmt(t['limit']))
    lines.append('| %s | %s | %s | %s | %s |' % (t['target'], fmt(t['measured']), lim, v, t['detail']))
lines += ['', '## All medians', '', 'n = number of runs; min–max in parentheses; others = highest CPU % of one core used by other processes during a run.', '',
          '| workload | case | tool | metric | median (min–max) | n | others |', '|---|---|---|---|---|---|---|']
for s in stats:
    spread = '' if s['n'] == 1 else ' (%s–%s)' % (fmt(s['min']), fmt(s['max']))
    lines.append('| %s | %s | %s | %s | %s %s%s | %d | %s |' % (s['workload'], s['case'], s['tool'], s['metric'], fmt(s['median']), s['unit'], spread, s['n'],
                                                            '' if s['others_cpu_pct_max'] is None else '%.0f%%' % s['others_cpu_pct_max']))
fail = os.path.join(out, 'failures.txt')
if os.path.exists(fail):
    lines += ['', '## Failures', ''] + ['- ' + l for l in open(fail).read().split('\n') if l]
text = '\n'.join(lines) + '\n'
with open(os.path.join(out, 'summary.md'), 'w') as fh:
    fh.write(text)
print(text)

# Charts.
if not shutil.which('gnuplot'):
    sys.exit(0)
def plot(name, script, data):
    dp = os.path.join(out, name + '.dat')
    with open(dp, 'w') as fh:
        fh.write(data)
    sp = os.path.join(out, name + '.gp')
    with open(sp, 'w') as fh:
        fh.write('set terminal pngcairo size 900,500 font ",11"\nset output "%s"\n' % os.path.join(out, name + '.png') + script.replace('DATA', dp))
    subprocess.run(['gnuplot', sp], check=False)

steps = [('untar', 'untar'), ('md5sum', 'md5sum -c'), ('ls_lR', 'ls -lR'), ('rm_rf', 'rm -rf')]
if any(g('p1', s, 'secrate', 'wall_s') for s, _ in steps):
    data = ''.join('"%s" %s %s %s %s\n' % (lab, *[g('p1', s, t, 'wall_s') or 0 for t in ('plain', 'gocryptfs', 'secrate', 'memfs')]) for s, lab in steps)
    plot('p1', 'set title "P1: gocryptfs canonical steps (seconds, lower is better, log scale)"\nset style data histograms\nset style histogram clustered gap 1\n'
         'set style fill solid 0.8 border -1\nset logscale y\nset yrange [0.01:*]\nset grid ytics\nset key top right\n'
         'plot "DATA" using 2:xtic(1) title "plain dir", "" using 3 title "gocryptfs", "" using 4 title "secrate", '
         '"" using 5 title "in-memory FUSE (ceiling)"\n', data)
if g('p2', 'write', 'secrate', 'mb_per_s'):
    data = ''.join('"%s" %s %s %s %s %s\n' % (lab, *[g('p2', c, t, 'mb_per_s') or 0 for t in ('plain', 'gocryptfs')],
                                                g('p2', sc, 'secrate', 'mb_per_s') or 0, g('p2', c, 'secrate', 'mb_per_s') if c == 'read_cold' else 0,
                                                g('ceil', 'fuse_' + c, 'nullfs', 'mb_per_s') or 0)
                   for c, sc, lab in (('write', 'write', 'write (dd conv=fsync)'), ('read_cold', 'read_cold_cache_kept', 'cold read')))
    plot('p2', 'set title "P2: sequential random data (MB/s, higher is better)"\nset style data histograms\nset style histogram clustered gap 1\n'
         'set style fill solid 0.8 border -1\nset yrange [0:*]\nset grid ytics\nset key top left\n'
         'plot "DATA" using 2:xtic(1) title "plain dir", "" using 3 title "gocryptfs", "" using 4 title "secrate", '
         '"" using 5 title "secrate, from the store (fresh cache)", "" using 6 title "no-op FUSE (ceiling)"\n', data)
p3sets = [ds for ds in ('random', 'source') if g('p3', ds, 'secrate', 'mb_per_s')]
if p3sets:
    tools = ('secrate', 'restic', 'restic-nocomp', 'borg')
    data = ''.join('"%s" %s\n' % (ds, ' '.join(str(g('p3', ds, t, 'mb_per_s') or 0) for t in tools)) for ds in p3sets)
    plot('p3', 'set title "P3: first backup into a local store (MB/s, higher is better)"\nset style data histograms\nset style histogram clustered gap 1\n'
         'set style fill solid 0.8 border -1\nset yrange [0:*]\nset grid ytics\nset key top right\n'
         'plot "DATA" using 2:xtic(1) title "secrate", "" using 3 title "restic (zstd auto)", "" using 4 title "restic (no compression)", '
         '"" using 5 title "borg (lz4)"\n', data)
if vers:
    data = ''.join('%s %s %s %s\n' % (c[1:], *[(g('p4', c, t, 'store_bytes') or 0) / 1e6 for t in ('secrate', 'restic', 'borg')]) for c in vers)
    plot('p4', 'set title "P4: store size after each version of a source tree (MB, lower is better)"\nset xlabel "version"\nset ylabel "MB"\n'
         'set grid\nset key top left\nplot "DATA" using 1:2 with linespoints lw 2 title "secrate", "" using 1:3 with linespoints lw 2 title "restic (zstd auto)", '
         '"" using 1:4 with linespoints lw 2 title "borg (lz4)"\n', data)
rat = [t for t in targets if t['measured'] is not None and t['limit'] and t['op'] in ('<=', '<') and 'secrate /' in t['target']]
rat += [t for t in targets if t['measured'] is not None and t['limit'] and t['op'] == '>=' and '/' in t['target']]
if rat:
    data = ''
    for t in rat:
        # score: measured relative to the target, oriented so that <= 1 meets it
        sc = t['measured'] / t['limit'] if t['op'] in ('<=', '<') else (t['limit'] / t['measured'] if t['measured'] else 0)
        data += '"%s" %.4f\n' % (t['target'].replace('secrate / ', '/').replace(': ', '\\n'), sc)
    plot('targets', 'set title "Distance to target (1 = target; below 1 meets it; log scale)"\nset style data histograms\nset style fill solid 0.8 border -1\n'
         'set logscale y\nset grid ytics\nset xtics rotate by -40 font ",8"\nset bmargin 9\nset arrow from graph 0, first 1 to graph 1, first 1 nohead lc rgb "red" lw 2\n'
         'plot "DATA" using 2:xtic(1) notitle\n', data)
EOF
}
