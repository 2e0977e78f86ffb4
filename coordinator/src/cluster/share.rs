//! Fair sharing of the cluster's worker slots between the jobs a leader runs: pure
//! decisions over plain data, no IO ([`super::pool::SlotBoard`] is the shell).
//!
//! **Weights.** Each job has a weight (its `priority`). A job's *virtual time* is the
//! slot-seconds it was served while it competed, divided by its weight. A free slot goes
//! to the job that would have the smallest virtual time after taking it, counting each of
//! its busy slots as one [`QUANTUM_SECS`] ahead: `virtual + (busy + 1) × quantum /
//! weight` (start-time fair queuing over slot time). Over time each running job's share
//! of the busy slots tends to its weight over the sum of the weights of the jobs that
//! want slots, whatever the chunks' durations; at the start (equal virtual times) the
//! slots split by weight at once (3:1 on 8 slots is 6 and 2).
//!
//! **Work-conserving.** Only jobs that want a slot now compete: a job with fewer chunks
//! than its share (or held by its own throttle) leaves the rest to the others. A job that
//! comes back after not competing starts level with the competing ones (its virtual time
//! is raised to their smallest), and no job banks more than [`MAX_LAG_SECS`] of credit,
//! so neither an idle spell nor a low throttle lets it take every slot later.
//!
//! **Shared databases.** Jobs whose source or target is the same database (the same
//! [`ferry_model::spec::EndpointSpec::database_identity`], in either role) share one cap
//! on their chunks in flight: the cluster's configured cap for that database when there is
//! one, otherwise the smallest concurrency (throttle gate) among the jobs that use or want
//! it now, so two jobs never give a database more load than the stricter alone would. A
//! job gets a slot only while every database it touches is under its cap.
//!
//! Slots are never taken back: a job that arrives while others hold every slot gets its
//! share as their chunks end.

use std::collections::{BTreeMap, HashMap};

/// The slot time by which each busy slot counts ahead when choosing (seconds).
pub const QUANTUM_SECS: f64 = 1.0;

/// The most credit (in virtual seconds) a job keeps over the furthest-ahead competing job.
pub const MAX_LAG_SECS: f64 = 30.0;

/// One job's part in the sharing.
#[derive(Clone, Debug, PartialEq)]
pub struct JobShare {
    /// Its weight (the spec's `priority`), at least 1.
    pub weight: u32,
    /// Slots it holds now.
    pub busy: u32,
    /// More slots it would take now (0: it does not compete).
    pub wanted: u32,
    /// Chunks its own throttle allows in flight (the shared databases' default cap).
    pub concurrency: u32,
    /// The databases it reads or writes ([`ferry_model::spec::EndpointSpec::database_identity`]).
    pub databases: Vec<String>,
    /// Slot-seconds served while competing, divided by the weight.
    pub virtual_secs: f64,
}

impl JobShare {
    /// A job that holds nothing and wants nothing yet.
    pub fn new(weight: u32, databases: Vec<String>) -> Self {
        let mut databases = databases;
        databases.sort();
        databases.dedup();
        Self {
            weight: weight.max(1),
            busy: 0,
            wanted: 0,
            concurrency: u32::MAX,
            databases,
            virtual_secs: 0.0,
        }
    }

    /// Whether the job holds or wants slots.
    pub fn active(&self) -> bool {
        self.busy > 0 || self.wanted > 0
    }

    /// The key a free slot is given by: the smallest wins.
    fn next_key(&self) -> f64 {
        self.virtual_secs + f64::from(self.busy + 1) * QUANTUM_SECS / f64::from(self.weight.max(1))
    }
}

/// One database's chunks in flight across jobs, and its cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatabaseUse {
    /// Chunks in flight on it now, summed over the jobs that touch it.
    pub busy: u32,
    /// Most chunks in flight allowed on it now.
    pub cap: u32,
    /// Whether `cap` is the cluster's configured one (else the jobs' smallest concurrency).
    pub configured: bool,
}

/// Each database touched by an active job: chunks in flight and cap. `configured` maps
/// a database identity to the cluster's cap for it.
pub fn database_use<'a>(
    jobs: impl IntoIterator<Item = &'a JobShare>,
    configured: &HashMap<String, u32>,
) -> BTreeMap<String, DatabaseUse> {
    let mut uses: BTreeMap<String, DatabaseUse> = BTreeMap::new();
    for job in jobs.into_iter().filter(|job| job.active()) {
        for database in &job.databases {
            let configured_cap = configured.get(database).copied();
            let entry = uses.entry(database.clone()).or_insert(DatabaseUse {
                busy: 0,
                cap: configured_cap.unwrap_or(u32::MAX),
                configured: configured_cap.is_some(),
            });
            entry.busy += job.busy;
            if !entry.configured {
                entry.cap = entry.cap.min(job.concurrency);
            }
        }
    }
    uses
}

/// The job (an index into `jobs`) that gets the next free slot: among those that want
/// one and whose databases are all under their caps, the smallest
/// `virtual + (busy + 1) × quantum / weight`; ties go to the higher weight, then to the
/// lower index. `None` when no job may take a slot.
pub fn next_job(jobs: &[JobShare], configured: &HashMap<String, u32>) -> Option<usize> {
    let uses = database_use(jobs, configured);
    let under_caps = |job: &JobShare| {
        job.databases.iter().all(|database| {
            uses.get(database)
                .is_none_or(|database_use| database_use.busy < database_use.cap)
        })
    };
    jobs.iter()
        .enumerate()
        .filter(|(_, job)| job.wanted > 0 && under_caps(job))
        .min_by(|(index_a, a), (index_b, b)| {
            a.next_key()
                .total_cmp(&b.next_key())
                .then(b.weight.cmp(&a.weight))
                .then(index_a.cmp(index_b))
        })
        .map(|(index, _)| index)
}

/// Accounts `elapsed_secs` of service: each active job's virtual time grows by its busy
/// slots × the time / its weight; then no active job stays more than [`MAX_LAG_SECS`]
/// behind the furthest-ahead active one.
pub fn advance(jobs: &mut [JobShare], elapsed_secs: f64) {
    for job in jobs.iter_mut().filter(|job| job.active()) {
        job.virtual_secs += f64::from(job.busy) * elapsed_secs / f64::from(job.weight.max(1));
    }
    let furthest = jobs
        .iter()
        .filter(|job| job.active())
        .map(|job| job.virtual_secs)
        .fold(f64::NEG_INFINITY, f64::max);
    if furthest.is_finite() {
        for job in jobs.iter_mut().filter(|job| job.active()) {
            job.virtual_secs = job.virtual_secs.max(furthest - MAX_LAG_SECS);
        }
    }
}

/// A job that starts competing again (it held and wanted nothing) starts level: its
/// virtual time is raised to the smallest among the other active jobs, so that time it
/// did not compete is no credit.
pub fn rejoin(jobs: &mut [JobShare], index: usize) {
    let level = jobs
        .iter()
        .enumerate()
        .filter(|(other, job)| *other != index && job.active())
        .map(|(_, job)| job.virtual_secs)
        .fold(f64::INFINITY, f64::min);
    if let Some(job) = jobs.get_mut(index)
        && level.is_finite()
    {
        job.virtual_secs = job.virtual_secs.max(level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny deterministic pseudo-random sequence (no dependency, same every run).
    struct Lcg(u64);

    impl Lcg {
        fn next_unit(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// A running chunk in the simulation.
    struct Running {
        job: usize,
        ends_at: f64,
    }

    /// Simulates `slots` worker slots shared by `jobs` for `duration` seconds: free slots
    /// are filled with [`next_job`]; each chunk of job `j` runs `chunk_secs[j]` × a random
    /// factor in 0.5..1.5; `demand(j, busy)` says how many more chunks job `j` wants.
    /// Returns each job's busy slot-seconds and the most chunks in flight seen per database.
    fn simulate(
        jobs: &mut [JobShare],
        slots: u32,
        chunk_secs: &[f64],
        duration: f64,
        configured: &HashMap<String, u32>,
        demand: impl Fn(usize, u32) -> u32,
    ) -> (Vec<f64>, BTreeMap<String, u32>) {
        let mut random = Lcg(42);
        let mut running: Vec<Running> = Vec::new();
        let mut busy_secs = vec![0.0; jobs.len()];
        let mut peak: BTreeMap<String, u32> = BTreeMap::new();
        let mut now = 0.0;
        while now < duration {
            for index in 0..jobs.len() {
                let was_active = jobs[index].active();
                jobs[index].wanted = demand(index, jobs[index].busy);
                if !was_active && jobs[index].active() {
                    rejoin(jobs, index);
                }
            }
            while (running.len() as u32) < slots {
                let Some(chosen) = next_job(jobs, configured) else {
                    break;
                };
                jobs[chosen].busy += 1;
                jobs[chosen].wanted -= 1;
                let factor = 0.5 + random.next_unit();
                running.push(Running {
                    job: chosen,
                    ends_at: now + chunk_secs[chosen] * factor,
                });
            }
            for (database, database_use) in database_use(jobs.iter(), configured) {
                let seen = peak.entry(database).or_insert(0);
                *seen = (*seen).max(database_use.busy);
            }
            let Some(next_end) = running
                .iter()
                .map(|chunk| chunk.ends_at)
                .min_by(f64::total_cmp)
            else {
                break;
            };
            let elapsed = next_end - now;
            for (index, job) in jobs.iter().enumerate() {
                busy_secs[index] += f64::from(job.busy) * elapsed;
            }
            advance(jobs, elapsed);
            now = next_end;
            running.retain(|chunk| {
                let ended = chunk.ends_at <= now;
                if ended {
                    jobs[chunk.job].busy -= 1;
                }
                !ended
            });
        }
        (busy_secs, peak)
    }

    fn share_of(busy_secs: &[f64], index: usize) -> f64 {
        busy_secs[index] / busy_secs.iter().sum::<f64>()
    }

    #[test]
    fn weights_three_to_one_share_the_busy_slots_75_25() {
        for (slots, chunk_secs) in [(8, [4.0, 4.0]), (2, [4.0, 4.0]), (8, [1.0, 10.0])] {
            let mut jobs = vec![
                JobShare::new(3, vec!["a:5432/src".into()]),
                JobShare::new(1, vec!["b:5432/src".into()]),
            ];
            let (busy_secs, _) = simulate(
                &mut jobs,
                slots,
                &chunk_secs,
                5_000.0,
                &HashMap::new(),
                |_, _| u32::MAX,
            );
            let share = share_of(&busy_secs, 0);
            assert!(
                (0.72..=0.78).contains(&share),
                "{slots} slots, chunks of {chunk_secs:?} s: the weight-3 job had {share:.3} of the busy slot time"
            );
        }
    }

    #[test]
    fn the_first_slots_split_by_weight_at_once() {
        let mut jobs = vec![
            JobShare::new(3, vec!["a:1/x".into()]),
            JobShare::new(1, vec!["b:1/x".into()]),
        ];
        for job in &mut jobs {
            job.wanted = 100;
        }
        for _ in 0..8 {
            let chosen = next_job(&jobs, &HashMap::new()).unwrap();
            jobs[chosen].busy += 1;
            jobs[chosen].wanted -= 1;
        }
        assert_eq!((jobs[0].busy, jobs[1].busy), (6, 2));
    }

    #[test]
    fn a_job_wanting_fewer_slots_than_its_share_leaves_the_rest_to_the_other() {
        let mut jobs = vec![
            JobShare::new(3, vec!["a:1/x".into()]),
            JobShare::new(1, vec!["b:1/x".into()]),
        ];
        // The heavy job never runs more than one chunk at a time.
        let (busy_secs, _) = simulate(
            &mut jobs,
            8,
            &[4.0, 4.0],
            2_000.0,
            &HashMap::new(),
            |job, busy| if job == 0 { 1 - busy.min(1) } else { u32::MAX },
        );
        let share = share_of(&busy_secs, 1);
        // 7 of 8 slots: the light job takes what the heavy one leaves.
        assert!(
            (0.85..=0.9).contains(&share),
            "the weight-1 job had {share:.3} of the busy slot time"
        );
        // And once the heavy job wants more, it is not owed the time it did not compete.
        let heavy_lag = jobs[1].virtual_secs - jobs[0].virtual_secs;
        assert!(heavy_lag <= MAX_LAG_SECS + 1e-9, "{heavy_lag}");
    }

    #[test]
    fn a_job_alone_gets_every_slot_it_wants() {
        let mut jobs = vec![JobShare::new(1, vec!["a:1/x".into()])];
        jobs[0].wanted = 5;
        let mut granted = 0;
        while let Some(chosen) = next_job(&jobs, &HashMap::new()) {
            jobs[chosen].busy += 1;
            jobs[chosen].wanted -= 1;
            granted += 1;
        }
        assert_eq!(granted, 5);
    }

    #[test]
    fn jobs_sharing_a_database_stay_under_its_configured_cap() {
        let shared = "db.example.com:5432/orders".to_owned();
        let mut jobs = vec![
            JobShare::new(3, vec![shared.clone(), "t1:5432/copy".into()]),
            JobShare::new(1, vec![shared.clone(), "t2:5432/copy".into()]),
            JobShare::new(1, vec!["other:5432/x".into(), "t3:5432/y".into()]),
        ];
        for job in &mut jobs {
            job.concurrency = 16;
        }
        let configured = HashMap::from([(shared.clone(), 4)]);
        let (busy_secs, peak) = simulate(
            &mut jobs,
            12,
            &[3.0, 3.0, 3.0],
            2_000.0,
            &configured,
            |_, _| u32::MAX,
        );
        assert_eq!(peak[&shared], 4, "the shared database's cap");
        // The third job, on other databases, takes the slots the cap leaves free.
        assert!(share_of(&busy_secs, 2) > 0.6, "{busy_secs:?}");
        // Within the cap the weights still hold (3:1 of 4 slots).
        let ratio = busy_secs[0] / busy_secs[1];
        assert!((2.5..=3.5).contains(&ratio), "{busy_secs:?}");
    }

    #[test]
    fn without_a_configured_cap_a_shared_database_gets_the_smallest_concurrency() {
        let shared = "db:5432/orders".to_owned();
        let mut jobs = vec![
            JobShare::new(1, vec![shared.clone(), "t1:5432/a".into()]),
            JobShare::new(1, vec![shared.clone(), "t2:5432/b".into()]),
        ];
        jobs[0].concurrency = 3;
        jobs[1].concurrency = 6;
        let (_, peak) = simulate(
            &mut jobs,
            16,
            &[2.0, 2.0],
            500.0,
            &HashMap::new(),
            |_, _| u32::MAX,
        );
        assert_eq!(peak[&shared], 3);
        // The targets are not shared: each is capped by its own job only.
        assert!(peak["t2:5432/b"] >= 1);
        // A job alone on a database: its own concurrency, nothing stricter.
        let alone = [JobShare {
            wanted: 1,
            concurrency: 6,
            ..JobShare::new(1, vec![shared.clone()])
        }];
        assert_eq!(
            database_use(alone.iter(), &HashMap::new())[&shared],
            DatabaseUse {
                busy: 0,
                cap: 6,
                configured: false
            }
        );
    }

    #[test]
    fn a_returning_job_starts_level_instead_of_taking_every_slot() {
        let mut jobs = vec![
            JobShare::new(1, vec!["a:1/x".into()]),
            JobShare::new(1, vec!["b:1/x".into()]),
        ];
        jobs[0].busy = 4;
        jobs[0].virtual_secs = 500.0;
        // The second job was idle all that time.
        jobs[1].wanted = 4;
        rejoin(&mut jobs, 1);
        assert_eq!(jobs[1].virtual_secs, 500.0);
    }
}
