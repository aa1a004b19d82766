//! Retention: which snapshots a policy keeps, and forgetting the rest.
//!
//! Policies work as restic's and borg's: `last N` keeps the N newest;
//! `hourly/daily/weekly/monthly/yearly N` keep the newest snapshot in each of
//! the N most recent hours/days/ISO weeks/months/years that have one;
//! `within D` keeps everything up to D older than the newest snapshot.
//! Snapshots are grouped by host and source; each group keeps its own.
//! A snapshot is kept if any rule keeps it, and so is the complete snapshot
//! before a partial one that is kept. Forgetting deletes snapshot
//! objects only, after their record (`snapshots-forgotten/<id>`, or a set) is on
//! every store; `prune` then removes the data nothing references.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::crypto::Id;
use crate::error::{Error, Result};
use crate::repo::snapshot::Snapshot;
use crate::repo::Repository;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    pub last: Option<u32>,
    pub hourly: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
    pub yearly: Option<u32>,
    pub within: Option<Duration>,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }

    /// Whether no rule can keep a snapshot: no rule at all, or only counts
    /// of 0 (`--keep-daily 0`). Such a policy forgets every snapshot.
    pub fn keeps_nothing(&self) -> bool {
        self.within.is_none()
            && [
                self.last,
                self.hourly,
                self.daily,
                self.weekly,
                self.monthly,
                self.yearly,
            ]
            .iter()
            .all(|n| n.unwrap_or(0) == 0)
    }

    /// The mount's default for automatic snapshots: everything from the
    /// last hour, hourly for two days, daily for 30 days, weekly for a year.
    pub fn mount_default() -> Policy {
        Policy {
            within: Some(Duration::from_secs(3600)),
            hourly: Some(48),
            daily: Some(30),
            weekly: Some(52),
            ..Default::default()
        }
    }

    /// Parse `last=3,hourly=24,within=2d` (or `none`: keep everything).
    pub fn parse(s: &str) -> Result<Option<Policy>> {
        let s = s.trim();
        if s == "none" {
            return Ok(None);
        }
        let mut p = Policy::default();
        for part in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
            let bad = || {
                Error::Invalid(format!(
                    "cannot read retention rule {part:?} (e.g. last=10,daily=7,within=1d, or none)"
                ))
            };
            let (k, v) = part.split_once('=').ok_or_else(bad)?;
            let n = || v.parse::<u32>().map_err(|_| bad());
            match k {
                "last" => p.last = Some(n()?),
                "hourly" => p.hourly = Some(n()?),
                "daily" => p.daily = Some(n()?),
                "weekly" => p.weekly = Some(n()?),
                "monthly" => p.monthly = Some(n()?),
                "yearly" => p.yearly = Some(n()?),
                "within" => p.within = Some(parse_duration(v)?),
                _ => return Err(bad()),
            }
        }
        if p.keeps_nothing() {
            return Err(Error::Invalid(
                "a retention policy that keeps nothing (empty, or only counts of 0) would forget everything; say `none` to keep all".into(),
            ));
        }
        Ok(Some(p))
    }
}

/// `90s`, `30m`, `12h`, `7d`, `2w`, `6m` is minutes; also combinations: `1d12h`.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let bad = || Error::Invalid(format!("{s:?} is not a duration (e.g. 12h, 7d, 2w, 1y)"));
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().map_err(|_| bad())?;
        num.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            'w' => 7 * 86400,
            'y' => 365 * 86400,
            _ => return Err(bad()),
        };
        total = total
            .checked_add(n.checked_mul(unit).ok_or_else(bad)?)
            .ok_or_else(bad)?;
    }
    if !num.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// The decision for one snapshot.
#[derive(Clone, Debug)]
pub struct Decision {
    pub id: Id,
    pub snapshot: Snapshot,
    pub keep: bool,
    pub reasons: Vec<String>,
}

fn bucket(time_ns: i64, unit: &str) -> i64 {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(time_ns as i128)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let (y, m, d, h) = (
        t.year() as i64,
        t.month() as i64,
        t.day() as i64,
        t.hour() as i64,
    );
    match unit {
        "hourly" => ((y * 100 + m) * 100 + d) * 100 + h,
        "daily" => (y * 100 + m) * 100 + d,
        "weekly" => {
            let (iy, w, _) = t.to_iso_week_date();
            iy as i64 * 100 + w as i64
        }
        "monthly" => y * 100 + m,
        _ => y,
    }
}

/// Apply `policy` to `snaps` (any order); `forget_ids` are removed whatever
/// the policy says. Returns decisions newest first.
pub fn decide(
    snaps: &[(Id, Snapshot)],
    policy: Option<&Policy>,
    forget_ids: &[Id],
) -> Vec<Decision> {
    let mut groups: BTreeMap<(String, String), Vec<&(Id, Snapshot)>> = BTreeMap::new();
    for s in snaps {
        groups
            .entry((s.1.host.clone(), s.1.source.clone()))
            .or_default()
            .push(s);
    }
    let mut out = Vec::new();
    for (_, mut group) in groups {
        let first = out.len();
        group.sort_by(|a, b| b.1.time_ns.cmp(&a.1.time_ns).then(b.0.cmp(&a.0)));
        let newest = group.first().map(|s| s.1.time_ns).unwrap_or(0);
        let mut counters: Vec<(&str, Option<u32>, Option<i64>)> = match policy {
            Some(p) => vec![
                ("hourly", p.hourly, None),
                ("daily", p.daily, None),
                ("weekly", p.weekly, None),
                ("monthly", p.monthly, None),
                ("yearly", p.yearly, None),
            ],
            None => Vec::new(),
        };
        for (i, (id, snap)) in group.iter().map(|s| (s.0, &s.1)).enumerate() {
            let mut reasons = Vec::new();
            match policy {
                None => reasons.push("no policy".to_string()),
                Some(p) => {
                    if p.last.is_some_and(|n| (i as u32) < n) {
                        reasons.push(format!("last {}", p.last.unwrap_or(0)));
                    }
                    if let Some(w) = p.within {
                        // In i128: a span past 292 years does not fit
                        // i64 nanoseconds (it wrapped and kept nothing).
                        let age = newest as i128 - snap.time_ns as i128;
                        if age <= w.as_nanos() as i128 {
                            reasons.push(format!("within {}s of the newest", w.as_secs()));
                        }
                    }
                    for (unit, left, last) in counters.iter_mut() {
                        let Some(n) = left else { continue };
                        if *n == 0 {
                            continue;
                        }
                        let b = bucket(snap.time_ns, unit);
                        if *last != Some(b) {
                            *last = Some(b);
                            *n -= 1;
                            reasons.push(format!("{unit} ({b})"));
                        }
                    }
                }
            }
            let forced = forget_ids.contains(&id);
            let keep = !forced && !reasons.is_empty();
            if forced {
                reasons = vec!["named to forget".into()];
            } else if !keep {
                reasons = vec!["no rule keeps it".into()];
            }
            out.push(Decision {
                id,
                snapshot: snap.clone(),
                keep,
                reasons,
            });
        }
        keep_complete_before_partial(&mut out[first..], forget_ids);
    }
    out.sort_by_key(|d| std::cmp::Reverse(d.snapshot.time_ns));
    out
}

/// A partial snapshot (`backup` could not read some entries) lacks what
/// it could not read: the complete snapshot before each one kept is kept
/// too, unless named to forget. (Otherwise `--keep-last 1` after a partial
/// backup forgot the last snapshot holding those files, and `prune` then
/// deleted their data.) `group` is one group's decisions, newest first.
fn keep_complete_before_partial(group: &mut [Decision], forget_ids: &[Id]) {
    let partial = |d: &Decision| {
        d.snapshot
            .tags
            .iter()
            .any(|t| t == crate::ops::backup::PARTIAL_TAG)
    };
    for i in 0..group.len() {
        if !group[i].keep || !partial(&group[i]) {
            continue;
        }
        let Some(j) = (i + 1..group.len()).find(|&j| !partial(&group[j])) else {
            continue;
        };
        if !group[j].keep && !forget_ids.contains(&group[j].id) {
            let why = format!(
                "the complete snapshot before partial {}",
                group[i].id.short()
            );
            group[j].keep = true;
            group[j].reasons = vec![why];
        }
    }
}

/// Forget the snapshots `decisions` do not keep: a record goes to every
/// store (one, `snapshots-forgotten/<id>`, for one snapshot; a forgotten
/// set for several), then they are deleted (`Repository::forget_snapshot`,
/// `forget_snapshots`), so that a store that missed the delete does not
/// bring them back. Takes the writer lock.
pub fn forget(repo: &Repository, decisions: &[Decision]) -> Result<usize> {
    let _lock = repo.lock("forget")?;
    let ids: Vec<Id> = decisions.iter().filter(|d| !d.keep).map(|d| d.id).collect();
    match ids.as_slice() {
        [] => {}
        [one] => repo.forget_snapshot(one)?,
        many => repo.forget_snapshots(many)?,
    }
    Ok(ids.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::snapshot::Origin;

    fn snap(hours_ago: i64, host: &str) -> (Id, Snapshot) {
        let base = 1_800_000_000i64; // a fixed "now"
        let t = (base - hours_ago * 3600) * 1_000_000_000;
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&t.to_le_bytes());
        id[8] = host.len() as u8;
        (
            Id(id),
            Snapshot {
                host: host.into(),
                ..Snapshot::test(t, Origin::Backup, Id::default())
            },
        )
    }

    /// `--keep-last 1` after a partial backup keeps the complete snapshot
    /// before it too (it holds what the partial one could not read); once
    /// a complete snapshot is newest, the partial one and what it kept go.
    /// A snapshot named to forget is forgotten all the same.
    #[test]
    fn the_complete_snapshot_before_a_kept_partial_one_is_kept() {
        let partial = |mut s: (Id, Snapshot)| {
            s.1.tags = vec![crate::ops::backup::PARTIAL_TAG.into()];
            s
        };
        let last1 = Policy {
            last: Some(1),
            ..Default::default()
        };
        let kept = |snaps: &[(Id, Snapshot)], forget: &[Id]| -> Vec<Id> {
            decide(snaps, Some(&last1), forget)
                .into_iter()
                .filter(|d| d.keep)
                .map(|d| d.id)
                .collect()
        };
        let (c1, p2, p3) = (snap(5, "h"), partial(snap(4, "h")), partial(snap(3, "h")));
        let snaps = vec![c1.clone(), p2.clone(), p3.clone()];
        assert_eq!(kept(&snaps, &[]), [p3.0, c1.0]);
        assert_eq!(kept(&snaps, &[c1.0]), [p3.0]);
        let c4 = snap(2, "h");
        let snaps = vec![c1.clone(), p2, p3, c4.clone()];
        assert_eq!(kept(&snaps, &[]), [c4.0]);
        // Only partial snapshots: the policy alone.
        let only: Vec<_> = (0..4).map(|h| partial(snap(h, "h"))).collect();
        assert_eq!(kept(&only, &[]), [only[0].0]);
    }

    #[test]
    fn last_and_daily() {
        // One snapshot every 6 hours for 10 days.
        let snaps: Vec<_> = (0..40).map(|i| snap(i * 6, "h")).collect();
        let p = Policy {
            last: Some(3),
            daily: Some(5),
            ..Default::default()
        };
        let d = decide(&snaps, Some(&p), &[]);
        let kept: Vec<_> = d.iter().filter(|d| d.keep).collect();
        // 3 newest (same day or two) plus one per day for 5 days.
        assert!(kept.len() >= 5 && kept.len() <= 8, "{}", kept.len());
        assert!(d[0].keep && d[1].keep && d[2].keep);
        assert!(!d.last().unwrap().keep);
    }

    #[test]
    fn within_groups_and_forced() {
        let mut snaps: Vec<_> = (0..10).map(|i| snap(i, "a")).collect();
        snaps.extend((0..10).map(|i| snap(i + 100, "b")));
        let p = Policy::parse("within=3h").unwrap().unwrap();
        let forced = snaps[0].0;
        let d = decide(&snaps, Some(&p), &[forced]);
        let kept_a = d
            .iter()
            .filter(|d| d.keep && d.snapshot.host == "a")
            .count();
        let kept_b = d
            .iter()
            .filter(|d| d.keep && d.snapshot.host == "b")
            .count();
        // Each group keeps its own 3 hours (0..=3 hours old), minus the forced one.
        assert_eq!(kept_a, 3);
        assert_eq!(kept_b, 4);
        assert!(!d.iter().find(|d| d.id == forced).unwrap().keep);
    }

    /// `within=1000y` means "keep everything": its nanoseconds do not fit
    /// an i64. (Found by review: they wrapped negative and kept nothing.)
    #[test]
    fn a_span_of_centuries_keeps_everything() {
        let snaps: Vec<_> = (0..10).map(|i| snap(i * 24, "h")).collect();
        for span in ["1000y", "300y", "18446744073s"] {
            let p = Policy::parse(&format!("within={span}")).unwrap().unwrap();
            let d = decide(&snaps, Some(&p), &[]);
            assert!(d.iter().all(|d| d.keep), "within={span}");
        }
    }

    #[test]
    fn parsing() {
        assert_eq!(
            parse_duration("1d12h").unwrap(),
            Duration::from_secs(36 * 3600)
        );
        assert!(parse_duration("12").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(Policy::parse("none").unwrap().is_none());
        assert!(Policy::parse("").is_err());
        assert!(Policy::parse("daily=x").is_err());
        assert_eq!(Policy::parse("last=2").unwrap().unwrap().last, Some(2));
        // Only zeros keep nothing, like an empty policy; a zero beside a
        // rule that keeps something is that rule.
        assert!(Policy::parse("daily=0").is_err());
        assert!(Policy::parse("last=0,hourly=0").is_err());
        assert_eq!(
            Policy::parse("daily=0,last=1").unwrap().unwrap().last,
            Some(1)
        );
    }
}
