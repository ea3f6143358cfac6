//! Reads Autobahn `index.json` reports and prints, per agent, a table per
//! section: cases, OK, NON-STRICT, INFORMATIONAL, UNIMPLEMENTED, FAILED.
//! A case counts under the worse of its data and its close behaviour.
//!
//! Exits non-zero if any case is NON-STRICT, UNIMPLEMENTED or FAILED, or if
//! an agent did not run the number of cases given with `--expect`.
//!
//! Usage: `autobahn-report [--expect 517] index.json...`

use std::collections::BTreeMap;
use std::process::ExitCode;

const COLUMNS: [&str; 5] = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"];

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("autobahn-report: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<bool, String> {
    let mut expect = None;
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--expect" => expect = Some(args.next().and_then(|n| n.parse().ok()).ok_or("--expect needs a number")?),
            _ => files.push(arg),
        }
    }
    let mut pass = true;
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| format!("{file}: {e}"))?;
        let index: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
        let agents = index.as_object().ok_or(format!("{file}: not an object"))?;
        if agents.is_empty() {
            return Err(format!("{file}: no agent ran"));
        }
        for (agent, cases) in agents {
            let cases = cases.as_object().ok_or(format!("{file}: {agent} has no cases"))?;
            pass &= report(agent, cases, expect);
        }
    }
    Ok(pass)
}

/// Prints one agent's table and its failing cases; true if it passes.
fn report(agent: &str, cases: &serde_json::Map<String, serde_json::Value>, expect: Option<usize>) -> bool {
    let mut sections: BTreeMap<u32, [usize; 5]> = BTreeMap::new();
    let mut failures = Vec::new();
    for (id, result) in cases {
        let section = id.split('.').next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let behavior = result["behavior"].as_str().unwrap_or("FAILED");
        let close = result["behaviorClose"].as_str().unwrap_or("FAILED");
        let column = worse(column(behavior), column(close));
        sections.entry(section).or_default()[column] += 1;
        if matches!(COLUMNS[column], "NON-STRICT" | "UNIMPLEMENTED" | "FAILED") {
            failures.push(format!("  {id}: behavior {behavior}, close {close}"));
        }
    }
    println!("\n{agent}: {} cases", cases.len());
    println!(
        "{:>8} {:>6} {:>6} {:>11} {:>14} {:>14} {:>7}",
        "section", "cases", "OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"
    );
    let mut total = [0; 5];
    for (section, counts) in &sections {
        print_row(&section.to_string(), counts);
        total.iter_mut().zip(counts).for_each(|(t, c)| *t += c);
    }
    print_row("all", &total);
    failures.sort();
    for failure in &failures {
        println!("{failure}");
    }
    let count_ok = expect.is_none_or(|n| n == cases.len());
    if !count_ok {
        println!("  expected {} cases, ran {}", expect.unwrap_or_default(), cases.len());
    }
    failures.is_empty() && count_ok
}

fn print_row(label: &str, counts: &[usize; 5]) {
    let cases: usize = counts.iter().sum();
    println!(
        "{label:>8} {cases:>6} {:>6} {:>11} {:>14} {:>14} {:>7}",
        counts[0], counts[1], counts[2], counts[3], counts[4]
    );
}

/// The column of a behaviour; anything unknown (WRONG CODE, UNCLEAN) is a failure.
fn column(behavior: &str) -> usize {
    COLUMNS.iter().position(|c| *c == behavior).unwrap_or(4)
}

/// The worse of two columns: FAILED, then NON-STRICT, UNIMPLEMENTED, INFORMATIONAL, OK.
fn worse(a: usize, b: usize) -> usize {
    const RANK: [usize; 5] = [0, 3, 1, 2, 4];
    if RANK[a] >= RANK[b] { a } else { b }
}
