//! `report`: many runs (servers × rounds) in one table of medians, with each
//! server's ratio to the baseline (median and range over paired rounds).
//!
//! Rounds marked for discarding (listen-queue overflows, a busy generator)
//! are left out and listed. A ratio pairs the rounds with the same number,
//! which `compare.sh` runs back to back (A B C C B A ...).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use crate::report::{PhaseKind, PhaseReport, RunReport};
use crate::stats::median;

/// Reads one figure from a run, if the run has it.
type Reader = Box<dyn Fn(&RunReport) -> Option<f64>>;

/// One row: how to read a figure from a run.
struct Metric {
    label: String,
    decimals: usize,
    read: Reader,
}

impl Metric {
    fn new(
        label: impl Into<String>,
        decimals: usize,
        read: impl Fn(&RunReport) -> Option<f64> + 'static,
    ) -> Self {
        Self {
            label: label.into(),
            decimals,
            read: Box::new(read),
        }
    }
}

fn phase(report: &RunReport, kind: PhaseKind, rate: f64) -> Option<&PhaseReport> {
    report
        .phases
        .iter()
        .find(|p| p.kind == kind && p.rate == rate)
}

/// The rows, labelled with the settings of `sample`.
fn metrics(sample: &RunReport) -> Vec<Metric> {
    let sockets = sample.settings.connections.last().copied().unwrap_or(0);
    let stages = &sample.settings.connections;
    let slope_label = match stages.as_slice() {
        [.., low, high] => format!("idle memory per connection ({low}→{high}), KiB"),
        _ => "idle memory per connection, KiB".to_owned(),
    };
    let mut rows = vec![
        Metric::new(slope_label, 2, |r| r.kib_per_connection),
        Metric::new(format!("server RSS at {sockets} sockets, MiB"), 1, |r| {
            r.connect.last()?.rss_kib.map(|k| k as f64 / 1024.0)
        }),
        Metric::new("connect rate (last stage), sockets/s", 0, |r| {
            r.connect.last().map(|c| c.per_sec)
        }),
        Metric::new("handshake p50 (last stage), ms", 2, |r| {
            r.connect.last().map(|c| c.handshake.p50)
        }),
        Metric::new("handshake p99 (last stage), ms", 2, |r| {
            r.connect.last().map(|c| c.handshake.p99)
        }),
        Metric::new("server CPU per handshake, µs", 0, |r| {
            r.connect.last()?.server_cpu_us_per_handshake
        }),
        Metric::new("generator CPU while connecting, %", 0, |r| {
            r.connect.last().map(|c| c.generator_cpu_pct)
        }),
        Metric::new("server CPU idle (all sockets open), %", 1, |r| {
            r.server_idle_cpu_pct
        }),
        Metric::new("Redis commands per connect (last stage)", 1, |r| {
            r.connect.last()?.redis_commands_per_connect
        }),
    ];
    for &rate in &sample.settings.rates {
        let at = move |r: &RunReport| phase(r, PhaseKind::Fixed, rate).cloned();
        rows.push(Metric::new(
            format!("@{rate} calls/s: initiate→incoming p99, ms"),
            2,
            move |r| at(r).map(|p| p.incoming.p99),
        ));
        rows.push(Metric::new(
            format!("@{rate} calls/s: set-up p50, ms"),
            2,
            move |r| at(r).map(|p| p.accepted.p50),
        ));
        rows.push(Metric::new(
            format!("@{rate} calls/s: set-up p90, ms"),
            2,
            move |r| at(r).map(|p| p.accepted.p90),
        ));
        rows.push(Metric::new(
            format!("@{rate} calls/s: set-up p99, ms"),
            2,
            move |r| at(r).map(|p| p.accepted.p99),
        ));
        rows.push(Metric::new(
            format!("@{rate} calls/s: set-up p99.9, ms"),
            2,
            move |r| at(r).map(|p| p.accepted.p999),
        ));
        rows.push(Metric::new(
            format!("@{rate} calls/s: set-up max, ms"),
            2,
            move |r| at(r).map(|p| p.accepted.max),
        ));
        rows.push(Metric::new(
            format!("@{rate} calls/s: server CPU per call, µs"),
            0,
            move |r| at(r)?.server_cpu_us_per_call,
        ));
        rows.push(Metric::new(
            format!("@{rate} calls/s: Redis commands per call (initiate+accept+end)"),
            1,
            move |r| at(r)?.redis_commands_per_call,
        ));
        rows.push(Metric::new(
            format!("@{rate} calls/s: calls not completed"),
            0,
            move |r| at(r).map(|p| p.shortfall() as f64),
        ));
    }
    let knee_ms = sample.settings.knee_p99_ms;
    rows.push(Metric::new(
        format!("knee: highest step with set-up p99 ≤ {knee_ms} ms, calls/s"),
        0,
        |r| r.knee.as_ref().map(|k| k.rate.unwrap_or(0.0)),
    ));
    if sample.settings.storm_clients > 0 {
        let rate = sample.settings.storm_rate;
        let clients = sample.settings.storm_clients;
        rows.push(Metric::new(
            format!("@{rate} calls/s before the storm: set-up p99, ms"),
            2,
            move |r| phase(r, PhaseKind::StormBefore, rate).map(|p| p.accepted.p99),
        ));
        rows.push(Metric::new(
            format!("@{rate} calls/s, {clients} login loops: set-up p99, ms"),
            2,
            move |r| phase(r, PhaseKind::StormDuring, rate).map(|p| p.accepted.p99),
        ));
        rows.push(Metric::new(
            "login storm: set-up p99 during ÷ before",
            2,
            |r| r.storm_p99_ratio,
        ));
        rows.push(Metric::new("login storm: successful logins/s", 1, |r| {
            r.storm.as_ref().map(|s| s.ok_per_sec)
        }));
        rows.push(Metric::new("login storm: login p99, ms", 0, |r| {
            r.storm.as_ref().map(|s| s.latency.p99)
        }));
    }
    rows.push(Metric::new("sockets dropped by the server", 0, |r| {
        Some(r.dropped_sockets as f64)
    }));
    rows.push(Metric::new(
        "generator: max CPU in a measured phase, %",
        0,
        |r| Some(r.generator.max_cpu_pct),
    ));
    rows.push(Metric::new("generator: max send-lag p90, ms", 2, |r| {
        Some(r.generator.max_send_lag_p90_ms)
    }));
    rows.push(Metric::new("generator: max send-lag p99, ms", 2, |r| {
        Some(r.generator.max_send_lag_p99_ms)
    }));
    rows
}

fn read_reports(files: &[PathBuf]) -> Result<Vec<RunReport>, String> {
    let mut reports = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let report = serde_json::from_str(line)
                .map_err(|e| format!("{}:{}: {e}", file.display(), n + 1))?;
            reports.push(report);
        }
    }
    Ok(reports)
}

fn format_value(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

/// The comparison table of `reports`, `baseline` first.
pub fn table(reports: &[RunReport], baseline: &str) -> String {
    let Some(sample) = reports.first() else {
        return "no runs\n".to_owned();
    };
    let (kept, discarded): (Vec<&RunReport>, Vec<&RunReport>) =
        reports.iter().partition(|r| r.discard.is_empty());
    let mut by_target: BTreeMap<&str, BTreeMap<u32, &RunReport>> = BTreeMap::new();
    for r in &kept {
        by_target
            .entry(r.target.as_str())
            .or_default()
            .insert(r.round, r);
    }
    let mut targets: Vec<&str> = by_target.keys().copied().collect();
    targets.sort_by_key(|t| (*t != baseline, *t));
    let others: Vec<&str> = targets.iter().copied().filter(|t| *t != baseline).collect();

    let mut header = vec!["metric".to_owned()];
    header.extend(
        targets
            .iter()
            .map(|t| format!("{t} (n={})", by_target[t].len())),
    );
    header.extend(
        others
            .iter()
            .map(|t| format!("{t}/{baseline} median [min–max]")),
    );
    let mut rows = Vec::new();
    for metric in metrics(sample) {
        let mut row = vec![metric.label.clone()];
        for t in &targets {
            let mut values: Vec<f64> = by_target[t]
                .values()
                .filter_map(|r| (metric.read)(r))
                .collect();
            row.push(format_value(median(&mut values), metric.decimals));
        }
        for t in &others {
            let mut ratios: Vec<f64> = by_target[t]
                .iter()
                .filter_map(|(round, r)| {
                    let base = by_target.get(baseline)?.get(round)?;
                    let ratio = (metric.read)(r)? / (metric.read)(base)?;
                    ratio.is_finite().then_some(ratio)
                })
                .collect();
            let (min, max) = ratios
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                    (lo.min(v), hi.max(v))
                });
            row.push(match median(&mut ratios) {
                Some(m) => format!("{m:.2} [{min:.2}–{max:.2}]"),
                None => "-".to_owned(),
            });
        }
        rows.push(row);
    }
    let mut out = markdown(&header, &rows);
    let _ = writeln!(out, "\nWhere the knee search stopped, per kept round:");
    for t in &targets {
        let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
        for r in by_target[t].values() {
            if let Some(knee) = &r.knee {
                *reasons.entry(knee.stopped_by.as_str()).or_default() += 1;
            }
        }
        let reasons: Vec<String> = reasons
            .iter()
            .map(|(why, n)| format!("{why} ×{n}"))
            .collect();
        let _ = writeln!(out, "- {t}: {}", reasons.join(", "));
    }
    if !discarded.is_empty() {
        let _ = writeln!(out, "\nDiscarded rounds (not in the medians):");
        for r in discarded {
            let _ = writeln!(
                out,
                "- {} round {}: {}",
                r.target,
                r.round,
                r.discard.join("; ")
            );
        }
    }
    out
}

/// A markdown table with padded columns.
fn markdown(header: &[String], rows: &[Vec<String>]) -> String {
    let width = |col: usize| {
        rows.iter()
            .map(|r| r.get(col).map_or(0, |c| c.chars().count()))
            .chain([header[col].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, &w))| {
                if i == 0 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(header);
    let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
    out.push_str(&format!("|-{}-|\n", rule.join("-|-")));
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

/// `report FILES...`: prints the comparison table.
///
/// # Errors
/// An unreadable file or a malformed line.
pub fn print(files: &[PathBuf], baseline: &str) -> Result<(), String> {
    print!("{}", table(&read_reports(files)?, baseline));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{GeneratorReport, Settings};

    fn run(target: &str, round: u32, kib: f64, discard: &[&str]) -> RunReport {
        RunReport {
            target: target.to_owned(),
            round,
            settings: Settings {
                connections: vec![10, 20],
                pairs: 1,
                rates: Vec::new(),
                phase_secs: 1.0,
                storm_clients: 0,
                storm_rate: 0.0,
                steps: Vec::new(),
                knee_p99_ms: 10.0,
            },
            connect: Vec::new(),
            kib_per_connection: Some(kib),
            server_idle_cpu_pct: None,
            phases: Vec::new(),
            storm: None,
            storm_p99_ratio: None,
            knee: None,
            listen_overflows: Some(0),
            dropped_sockets: 0,
            generator: GeneratorReport {
                cores: 1,
                max_cpu_pct: 0.0,
                max_send_lag_p90_ms: 0.0,
                max_send_lag_p99_ms: 0.0,
            },
            discard: discard.iter().map(|d| (*d).to_owned()).collect(),
        }
    }

    fn memory_row(table: &str) -> Vec<String> {
        let line = table.lines().find(|l| l.contains("idle memory")).unwrap();
        line.split('|')
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .collect()
    }

    #[test]
    fn medians_leave_out_discarded_rounds_and_ratios_pair_rounds() {
        let reports = [
            run("callgate", 1, 30.0, &[]),
            run("node", 1, 15.0, &[]),
            run("callgate", 2, 32.0, &[]),
            run("node", 2, 24.0, &[]),
            run("node", 3, 1000.0, &["3 listen-queue overflows"]),
        ];
        let table = table(&reports, "callgate");
        let row = memory_row(&table);
        assert_eq!(row[1], "31.00", "{table}");
        assert_eq!(row[2], "19.50", "{table}");
        assert_eq!(row[3], "0.62 [0.50–0.75]", "{table}");
        assert!(
            table.contains("node round 3: 3 listen-queue overflows"),
            "{table}"
        );
    }

    #[test]
    fn the_baseline_comes_first() {
        let reports = [run("node", 1, 15.0, &[]), run("callgate", 1, 30.0, &[])];
        let header = table(&reports, "callgate")
            .lines()
            .next()
            .unwrap()
            .to_owned();
        assert!(
            header.find("callgate").unwrap() < header.find("node").unwrap(),
            "{header}"
        );
    }
}
