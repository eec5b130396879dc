//! Retention: which snapshots a policy keeps, and why. The rules are restic's, so that a
//! network manager who knows `restic forget` reads the same answer here: snapshots are taken
//! newest first within each group (host and paths); a keep-daily rule keeps the newest
//! snapshot of each of the N most recent days that have one, and so on for hours, ISO weeks,
//! months and years; a snapshot may be kept by several rules; the oldest snapshot is kept by
//! any rule with count left over ("oldest monthly snapshot"); `within` keeps everything newer
//! than the newest snapshot minus the span. Calendar boundaries are the school's time zone.
//!
//! Snapshots that the monitoring marked as possible ransomware and nobody has acknowledged
//! are held: kept whatever the policy says, and not counted against any rule, so that a night
//! of encrypted files cannot push the last clean copies out of the policy.

use std::collections::BTreeMap;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use jiff::{Span, Zoned};
use serde::Serialize;

use crate::repo::crypto::Kind;
use crate::repo::format::snapshot::Snapshot;
use crate::repo::ids::SnapshotId;
use crate::repo::{LockMode, RepoError, Repository};
use crate::units::{ValueError, ValueKind};

/// How many of a kind to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Count {
    N(u32),
    Unlimited,
}

impl Count {
    /// "7", or "unlimited".
    pub fn parse(s: &str) -> Result<Count, ValueError> {
        if s.eq_ignore_ascii_case("unlimited") {
            return Ok(Count::Unlimited);
        }
        s.parse::<u32>()
            .map(Count::N)
            .map_err(|_| ValueError::new(ValueKind::Count, s))
    }
}

/// A span of calendar time as restic writes it: `1y2m3d4h` (years, months, days, hours).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Within {
    pub years: i32,
    pub months: i32,
    pub days: i32,
    pub hours: i32,
}

impl Within {
    pub fn parse(s: &str) -> Result<Within, ValueError> {
        let bad = || ValueError::new(ValueKind::Span, s);
        let mut w = Within::default();
        let mut digits = String::new();
        let mut any = false;
        for c in s.trim().chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let n: i32 = digits.parse().map_err(|_| bad())?;
            digits.clear();
            match c {
                'y' => w.years += n,
                'm' => w.months += n,
                'd' => w.days += n,
                'h' => w.hours += n,
                _ => return Err(bad()),
            }
            any = true;
        }
        if !digits.is_empty() || !any {
            return Err(bad());
        }
        Ok(w)
    }

    fn span(&self) -> Span {
        Span::new()
            .years(self.years)
            .months(self.months)
            .days(self.days)
            .hours(self.hours)
    }
}

impl std::fmt::Display for Within {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (n, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n != 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

/// What to keep. An empty policy keeps nothing and is refused by `forget`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub last: Option<Count>,
    pub hourly: Option<Count>,
    pub daily: Option<Count>,
    pub weekly: Option<Count>,
    pub monthly: Option<Count>,
    pub yearly: Option<Count>,
    pub within: Option<Within>,
    /// Keep snapshots carrying every tag of any one of these lists.
    pub tags: Vec<Vec<String>>,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        self == &Policy::default()
    }
}

/// One snapshot's fate.
#[derive(Clone, Debug, Serialize)]
pub struct Decision {
    pub id: SnapshotId,
    #[serde(with = "crate::repo::format::rfc3339")]
    pub time: Timestamp,
    pub keep: bool,
    /// Why it is kept ("daily snapshot", "within 30d", "held: possible ransomware …").
    pub reasons: Vec<String>,
}

/// The snapshots of one host and set of paths, newest first.
#[derive(Clone, Debug, Serialize)]
pub struct Group {
    pub host: String,
    pub paths: Vec<String>,
    pub decisions: Vec<Decision>,
}

impl Group {
    pub fn kept(&self) -> usize {
        self.decisions.iter().filter(|d| d.keep).count()
    }
}

/// Group `snapshots` by host and paths and apply `policy` to each group. `held` snapshots are
/// kept with the given reason and count for no rule. `now` bounds `within`: snapshots dated in
/// the future do not move its reference point.
pub fn apply(
    policy: &Policy,
    snapshots: &[(SnapshotId, Snapshot)],
    held: &BTreeMap<SnapshotId, String>,
    tz: &TimeZone,
    now: Timestamp,
) -> Vec<Group> {
    type Key = (String, Vec<String>);
    let mut groups: BTreeMap<Key, Vec<&(SnapshotId, Snapshot)>> = BTreeMap::new();
    for s in snapshots {
        let mut paths = s.1.paths.clone();
        paths.sort();
        groups.entry((s.1.host.clone(), paths)).or_default().push(s);
    }
    groups
        .into_iter()
        .map(|((host, paths), list)| Group {
            host,
            paths,
            decisions: apply_group(policy, list, held, tz, now),
        })
        .collect()
}

type Bucketer = fn(&Zoned, usize) -> i64;

struct Bucket {
    count: Option<Count>,
    last: Option<i64>,
    of: Bucketer,
    reason: &'static str,
}

fn apply_group(
    policy: &Policy,
    mut list: Vec<&(SnapshotId, Snapshot)>,
    held: &BTreeMap<SnapshotId, String>,
    tz: &TimeZone,
    now: Timestamp,
) -> Vec<Decision> {
    // Newest first; equal times in id order, so the answer does not depend on listing order.
    list.sort_by(|a, b| b.1.time.cmp(&a.1.time).then(a.0.cmp(&b.0)));
    let zoned = |t: Timestamp| t.to_zoned(tz.clone());
    let mut buckets = [
        Bucket {
            count: policy.last,
            last: None,
            of: |_, nr| nr as i64,
            reason: "last snapshot",
        },
        Bucket {
            count: policy.hourly,
            last: None,
            of: |z, _| {
                i64::from(z.year()) * 1_000_000
                    + i64::from(z.month()) * 10_000
                    + i64::from(z.day()) * 100
                    + i64::from(z.hour())
            },
            reason: "hourly snapshot",
        },
        Bucket {
            count: policy.daily,
            last: None,
            of: |z, _| {
                i64::from(z.year()) * 10_000 + i64::from(z.month()) * 100 + i64::from(z.day())
            },
            reason: "daily snapshot",
        },
        Bucket {
            count: policy.weekly,
            last: None,
            of: |z, _| {
                let w = z.date().iso_week_date();
                i64::from(w.year()) * 100 + i64::from(w.week())
            },
            reason: "weekly snapshot",
        },
        Bucket {
            count: policy.monthly,
            last: None,
            of: |z, _| i64::from(z.year()) * 100 + i64::from(z.month()),
            reason: "monthly snapshot",
        },
        Bucket {
            count: policy.yearly,
            last: None,
            of: |z, _| i64::from(z.year()),
            reason: "yearly snapshot",
        },
    ];
    // `within` counts back from the newest snapshot that is not in the future.
    let cutoff = policy.within.and_then(|w| {
        let latest = list.iter().map(|s| s.1.time).find(|t| *t <= now)?;
        zoned(latest).checked_sub(w.span()).ok()
    });
    let counted: Vec<&&(SnapshotId, Snapshot)> =
        list.iter().filter(|s| !held.contains_key(&s.0)).collect();
    let oldest = counted.len().saturating_sub(1);
    let mut decisions = Vec::new();
    let mut nr = 0;
    for s in &list {
        let (id, snap) = (&s.0, &s.1);
        let mut reasons = Vec::new();
        if let Some(why) = held.get(id) {
            reasons.push(why.clone());
            decisions.push(Decision {
                id: *id,
                time: snap.time,
                keep: true,
                reasons,
            });
            continue;
        }
        let z = zoned(snap.time);
        for b in &mut buckets {
            let live = matches!(b.count, Some(Count::Unlimited) | Some(Count::N(1..)));
            if !live {
                continue;
            }
            let val = (b.of)(&z, nr);
            if b.last != Some(val) {
                b.last = Some(val);
                if let Some(Count::N(n)) = &mut b.count {
                    *n -= 1;
                }
                reasons.push(b.reason.to_string());
            } else if nr == oldest {
                reasons.push(format!("oldest {}", b.reason));
            }
        }
        if let (Some(cut), Some(w)) = (&cutoff, policy.within) {
            if z > *cut {
                reasons.push(format!("within {w}"));
            }
        }
        for tags in &policy.tags {
            if !tags.is_empty() && tags.iter().all(|t| snap.tags.contains(t)) {
                reasons.push(format!("has tags {}", tags.join(",")));
            }
        }
        decisions.push(Decision {
            id: *id,
            time: snap.time,
            keep: !reasons.is_empty(),
            reasons,
        });
        nr += 1;
    }
    decisions
}

/// `holds/<id>`: a snapshot kept out of retention until a person releases it. Holds are
/// written, never edited: a release is a second document for the same snapshot.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Hold {
    pub version: u32,
    pub snapshot: SnapshotId,
    #[serde(with = "crate::repo::format::rfc3339")]
    pub time: Timestamp,
    /// Why ("possible ransomware: 38% of files rewritten with encrypted-looking content").
    pub reason: String,
    /// Set on the document that releases the hold.
    #[serde(default)]
    pub released_by: Option<String>,
}

/// Place a hold on a snapshot.
pub async fn hold(repo: &Repository, snapshot: SnapshotId, reason: &str) -> Result<(), RepoError> {
    let h = Hold {
        version: 1,
        snapshot,
        time: repo.clock().now(),
        reason: reason.to_string(),
        released_by: None,
    };
    repo.save_document(Kind::Hold, "holds", &h).await?;
    Ok(())
}

/// Release the holds on a snapshot; returns how many were open.
pub async fn release(
    repo: &Repository,
    snapshot: SnapshotId,
    by: &str,
) -> Result<usize, RepoError> {
    let open: Vec<Hold> = holds(repo)
        .await?
        .into_values()
        .filter(|h| h.snapshot == snapshot)
        .collect();
    for h in &open {
        let r = Hold {
            time: repo.clock().now(),
            released_by: Some(by.to_string()),
            ..h.clone()
        };
        repo.save_document(Kind::Hold, "holds", &r).await?;
    }
    Ok(open.len())
}

/// The holds in force, by snapshot.
pub async fn holds(repo: &Repository) -> Result<BTreeMap<SnapshotId, Hold>, RepoError> {
    let (docs, bad) = repo
        .load_all::<Hold, crate::repo::ids::SnapshotId>(Kind::Hold, "holds/")
        .await?;
    if let Some((key, e)) = bad.into_iter().next() {
        // A hold that cannot be read might be protecting a snapshot: refuse to guess.
        return Err(RepoError::Invalid(format!(
            "the hold {key} cannot be read ({e}); retention will not run until it can"
        )));
    }
    let mut docs: Vec<Hold> = docs.into_iter().map(|(_, h)| h).collect();
    docs.sort_by_key(|h| h.time);
    let mut out = BTreeMap::new();
    for h in docs {
        if h.released_by.is_some() {
            out.remove(&h.snapshot);
        } else {
            out.insert(h.snapshot, h);
        }
    }
    Ok(out)
}

/// What `forget` considers and does.
#[derive(Clone, Debug, Default)]
pub struct ForgetOptions {
    pub policy: Policy,
    /// Only snapshots with every one of these tags.
    pub tags: Vec<String>,
    /// Only snapshots of this schedule.
    pub schedule: Option<String>,
    pub dry_run: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct ForgetReport {
    pub groups: Vec<Group>,
    pub removed: Vec<SnapshotId>,
    /// Snapshots the storage refused to delete (Object Lock), with why.
    pub refused: Vec<(SnapshotId, String)>,
    pub dry_run: bool,
}

/// Apply a policy and delete the snapshots it does not keep (under an exclusive lock).
pub async fn forget(
    repo: &Repository,
    opts: &ForgetOptions,
    tz: &TimeZone,
) -> Result<ForgetReport, RepoError> {
    if opts.policy.is_empty() {
        return Err(RepoError::Invalid(
            "no policy given, so every snapshot would go: give at least one of --keep-last, --keep-daily, --keep-weekly, --keep-monthly, --keep-yearly, --keep-within or --keep-tag".into(),
        ));
    }
    let lock = if opts.dry_run {
        None
    } else {
        Some(repo.lock(LockMode::Exclusive, "forget").await?)
    };
    let result = forget_locked(repo, opts, tz).await;
    if let Some(lock) = lock {
        lock.release().await?;
    }
    result
}

async fn forget_locked(
    repo: &Repository,
    opts: &ForgetOptions,
    tz: &TimeZone,
) -> Result<ForgetReport, RepoError> {
    let (all, bad) = repo.snapshots().await?;
    if let Some((key, e)) = bad.into_iter().next() {
        return Err(RepoError::Invalid(format!(
            "snapshot {key} cannot be read ({e}); forget will not guess what it holds"
        )));
    }
    let chosen: Vec<(SnapshotId, Snapshot)> = all
        .into_iter()
        .filter(|(_, s)| opts.tags.iter().all(|t| s.tags.contains(t)))
        .filter(|(_, s)| {
            opts.schedule
                .as_ref()
                .is_none_or(|n| s.schedule.as_ref() == Some(n))
        })
        .collect();
    let held: BTreeMap<SnapshotId, String> = holds(repo)
        .await?
        .into_iter()
        .map(|(id, h)| (id, format!("held: {}", h.reason)))
        .collect();
    let groups = apply(&opts.policy, &chosen, &held, tz, repo.clock().now());
    let mut removed = Vec::new();
    let mut refused = Vec::new();
    if !opts.dry_run {
        for d in groups.iter().flat_map(|g| &g.decisions).filter(|d| !d.keep) {
            match repo
                .store()
                .delete(&format!("snapshots/{}", d.id.to_hex()))
                .await
            {
                Ok(()) => removed.push(d.id),
                Err(crate::storage::StorageError::Retained { until, .. }) => refused.push((
                    d.id,
                    format!(
                        "Object Lock retains it until {}; a later forget removes it",
                        crate::clock::human(until)
                    ),
                )),
                Err(e) => refused.push((d.id, e.to_string())),
            }
        }
    }
    Ok(ForgetReport {
        groups,
        removed,
        refused,
        dry_run: opts.dry_run,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::format::snapshot::BackupSummary;
    use crate::repo::ids::BlobId;

    fn london() -> TimeZone {
        TimeZone::get("Europe/London").unwrap()
    }

    /// A snapshot at a local time in London.
    fn at(n: u8, local: &str, tags: &[&str]) -> (SnapshotId, Snapshot) {
        let t: jiff::civil::DateTime = local.parse().unwrap();
        let ts = t.to_zoned(london()).unwrap().timestamp();
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&ts.as_second().to_be_bytes());
        id[31] = n;
        (
            SnapshotId::from_bytes(id),
            Snapshot {
                version: 1,
                time: ts,
                host: "nas1".into(),
                username: "root".into(),
                paths: vec!["/volume1/staff".into()],
                label: None,
                tags: tags.iter().map(|t| t.to_string()).collect(),
                schedule: Some("staff-nightly".into()),
                excludes: Vec::new(),
                tree: BlobId::from_bytes([0; 32]),
                parent: None,
                summary: BackupSummary::default(),
                program: "vouch test".into(),
            },
        )
    }

    /// A school year of nightly snapshots at 01:00, 1 September 2025 to 31 August 2026.
    fn year() -> Vec<(SnapshotId, Snapshot)> {
        let mut d = jiff::civil::date(2025, 9, 1);
        let mut out = Vec::new();
        while d <= jiff::civil::date(2026, 8, 31) {
            out.push(at(0, &format!("{d}T01:00"), &[]));
            d = d.tomorrow().unwrap();
        }
        out
    }

    // 2026-09-01 12:00 UTC.
    const NOW: Timestamp = Timestamp::constant(1788264000, 0);

    /// The local dates kept, newest first.
    fn kept(policy: &Policy, snaps: &[(SnapshotId, Snapshot)]) -> Vec<String> {
        kept_held(policy, snaps, &BTreeMap::new())
    }

    fn kept_held(
        policy: &Policy,
        snaps: &[(SnapshotId, Snapshot)],
        held: &BTreeMap<SnapshotId, String>,
    ) -> Vec<String> {
        let groups = apply(policy, snaps, held, &london(), NOW);
        assert_eq!(groups.len(), 1);
        groups[0]
            .decisions
            .iter()
            .filter(|d| d.keep)
            .map(|d| {
                let z = d.time.to_zoned(london());
                z.strftime("%Y-%m-%d %H:%M").to_string()
            })
            .collect()
    }

    fn days(list: &[&str]) -> Vec<String> {
        list.iter().map(|d| format!("{d} 01:00")).collect()
    }

    #[test]
    fn a_year_of_nightly_snapshots_against_each_rule() {
        let y = year();
        assert_eq!(y.len(), 365);
        let p = |f: fn(&mut Policy)| {
            let mut p = Policy::default();
            f(&mut p);
            p
        };
        assert_eq!(
            kept(&p(|p| p.last = Some(Count::N(3))), &y),
            days(&["2026-08-31", "2026-08-30", "2026-08-29"])
        );
        assert_eq!(
            kept(&p(|p| p.daily = Some(Count::N(3))), &y),
            days(&["2026-08-31", "2026-08-30", "2026-08-29"])
        );
        // ISO weeks run Monday to Sunday; 31 August 2026 is a Monday.
        assert_eq!(
            kept(&p(|p| p.weekly = Some(Count::N(4))), &y),
            days(&["2026-08-31", "2026-08-30", "2026-08-23", "2026-08-16"])
        );
        assert_eq!(
            kept(&p(|p| p.monthly = Some(Count::N(12))), &y),
            days(&[
                "2026-08-31",
                "2026-07-31",
                "2026-06-30",
                "2026-05-31",
                "2026-04-30",
                "2026-03-31",
                "2026-02-28",
                "2026-01-31",
                "2025-12-31",
                "2025-11-30",
                "2025-10-31",
                "2025-09-30",
            ])
        );
        // A rule with count to spare keeps the oldest snapshot, as restic does.
        let groups = apply(
            &p(|p| p.monthly = Some(Count::N(13))),
            &y,
            &BTreeMap::new(),
            &london(),
            NOW,
        );
        let last = groups[0].decisions.last().unwrap();
        assert!(last.keep);
        assert_eq!(last.reasons, ["oldest monthly snapshot"]);
        assert_eq!(groups[0].kept(), 13);
        assert_eq!(
            kept(&p(|p| p.yearly = Some(Count::N(5))), &y),
            days(&["2026-08-31", "2025-12-31", "2025-09-01"])
        );
        // Within counts back from the newest snapshot, not from now, and is strict.
        let within = kept(&p(|p| p.within = Some(Within::parse("30d").unwrap())), &y);
        assert_eq!(within.len(), 30);
        assert_eq!(within.last().unwrap(), "2026-08-02 01:00");
        assert_eq!(
            kept(&p(|p| p.daily = Some(Count::Unlimited)), &y).len(),
            365
        );
        assert!(kept(&Policy::default(), &y).is_empty());
    }

    #[test]
    fn one_snapshot_may_satisfy_several_rules_and_says_so() {
        let y = year();
        let policy = Policy {
            daily: Some(Count::N(7)),
            weekly: Some(Count::N(4)),
            monthly: Some(Count::N(6)),
            ..Policy::default()
        };
        let groups = apply(&policy, &y, &BTreeMap::new(), &london(), NOW);
        let d = &groups[0].decisions;
        assert_eq!(
            d[0].reasons,
            ["daily snapshot", "weekly snapshot", "monthly snapshot"]
        );
        // 7 days + Sundays 23 Aug and 16 Aug + month ends July..March = 7 + 2 + 5.
        assert_eq!(groups[0].kept(), 14);
        assert!(d.iter().all(|x| x.keep != x.reasons.is_empty()));
    }

    #[test]
    fn the_newest_snapshot_of_a_bucket_is_the_one_kept() {
        let snaps = vec![
            at(1, "2026-01-12T21:02", &[]),
            at(2, "2026-01-12T21:08", &[]),
            at(3, "2026-01-12T20:59", &[]),
        ];
        let policy = Policy {
            hourly: Some(Count::N(2)),
            ..Policy::default()
        };
        assert_eq!(
            kept(&policy, &snaps),
            ["2026-01-12 21:08", "2026-01-12 20:59"]
        );
    }

    #[test]
    fn days_are_the_schools_days_across_the_clock_change() {
        // 00:30 BST on 30 March is 23:30 UTC on the 29th: in London it is the 30th's backup.
        let snaps = vec![
            at(1, "2026-03-30T00:30", &[]),
            at(2, "2026-03-30T23:00", &[]),
            at(3, "2026-03-29T12:00", &[]),
        ];
        let policy = Policy {
            daily: Some(Count::N(2)),
            ..Policy::default()
        };
        assert_eq!(
            kept(&policy, &snaps),
            ["2026-03-30 23:00", "2026-03-29 12:00"]
        );
    }

    #[test]
    fn tags_keep_and_held_snapshots_count_for_nothing() {
        let mut snaps = year();
        snaps.push(at(9, "2026-06-15T14:00", &["before-ofsted"]));
        let policy = Policy {
            last: Some(Count::N(2)),
            tags: vec![vec!["before-ofsted".into()]],
            ..Policy::default()
        };
        assert_eq!(
            kept(&policy, &snaps),
            [
                "2026-08-31 01:00".to_string(),
                "2026-08-30 01:00".into(),
                "2026-06-15 14:00".into()
            ]
        );
        // The newest night looked like ransomware and nobody has said otherwise: it is kept,
        // and the two before it are kept as well.
        let newest = snaps
            .iter()
            .find(|s| s.1.time == snaps[364].1.time)
            .unwrap()
            .0;
        let held = BTreeMap::from([(newest, "held: possible ransomware".to_string())]);
        let policy = Policy {
            last: Some(Count::N(2)),
            ..Policy::default()
        };
        assert_eq!(
            kept_held(&policy, &year(), &held),
            days(&["2026-08-31", "2026-08-30", "2026-08-29"])
        );
    }

    #[test]
    fn groups_are_host_and_paths() {
        let mut snaps = year();
        let mut other = at(1, "2026-08-31T02:00", &[]);
        other.1.paths = vec!["/volume1/admin".into()];
        snaps.push(other);
        let policy = Policy {
            last: Some(Count::N(1)),
            ..Policy::default()
        };
        let groups = apply(&policy, &snaps, &BTreeMap::new(), &london(), NOW);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups.iter().map(Group::kept).sum::<usize>(), 2);
    }

    #[test]
    fn spans_and_counts_parse_as_restic_writes_them() {
        assert_eq!(
            Within::parse("1y2m3d4h").unwrap(),
            Within {
                years: 1,
                months: 2,
                days: 3,
                hours: 4
            }
        );
        assert_eq!(Within::parse("90d").unwrap().to_string(), "90d");
        for bad in ["", "d", "5", "3w", "1.5d"] {
            assert!(Within::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Count::parse("unlimited").unwrap(), Count::Unlimited);
        assert!(Count::parse("-1").is_err());
    }
}
