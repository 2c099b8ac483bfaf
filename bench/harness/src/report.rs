//! The sitting's results: raw runs and summaries as JSON, a markdown table, and an SVG chart
//! of every goal as measured ÷ goal (1.0 is the goal; further right is better).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::Value;

use crate::Settings;

#[derive(Serialize)]
pub struct Report {
    pub generated: String,
    pub settings: Settings,
    pub machine: Machine,
    /// Scenario name → what it measured, raw runs included.
    pub scenarios: serde_json::Map<String, Value>,
    pub tables: Vec<Table>,
    pub goals: Vec<Goal>,
    /// Measured figures with no goal: ratios that inform, and that nothing is held to.
    pub figures: Vec<Figure>,
    /// What could not run, and why.
    pub skipped: Vec<String>,
}

#[derive(Serialize)]
pub struct Machine {
    pub cores: usize,
    pub kernel: String,
}

/// A markdown table of one scenario.
#[derive(Serialize)]
pub struct Table {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
}

#[derive(Serialize)]
pub struct Goal {
    pub name: String,
    pub measured: f64,
    pub target: f64,
    pub better: Better,
    /// How the numbers read: "×", "flows/s", "ms", "MB", "failures".
    pub unit: String,
    pub met: bool,
}

/// A measured figure with no goal, reported for information.
#[derive(Serialize)]
pub struct Figure {
    pub name: String,
    pub measured: f64,
    /// How the number reads, as for a goal.
    pub unit: String,
    /// What the figure means or what it cannot show, in a few words.
    pub note: String,
}

impl Goal {
    /// Measured against the goal, so that 1.0 is the goal and more is better.
    pub fn score(&self) -> f64 {
        match self.better {
            Better::Higher => self.measured / self.target,
            Better::Lower if self.target == 0.0 => f64::from(u8::from(self.measured == 0.0)),
            Better::Lower => self.target / self.measured.max(f64::MIN_POSITIVE),
        }
    }

    fn target_text(&self) -> String {
        let op = match self.better {
            Better::Higher => "≥",
            Better::Lower => "≤",
        };
        format!("{op} {} {}", number(self.target), self.unit)
    }
}

impl Report {
    pub fn new(settings: &Settings) -> Report {
        Report {
            generated: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            settings: settings.clone(),
            machine: Machine {
                cores: std::thread::available_parallelism().map_or(0, usize::from),
                kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
            },
            scenarios: Default::default(),
            tables: Vec::new(),
            goals: Vec::new(),
            figures: Vec::new(),
            skipped: Vec::new(),
        }
    }

    pub fn goal(&mut self, name: &str, measured: f64, better: Better, target: f64, unit: &str) {
        let met = match better {
            Better::Higher => measured >= target,
            Better::Lower => measured <= target,
        };
        self.goals.push(Goal {
            name: name.to_owned(),
            measured,
            target,
            better,
            unit: unit.to_owned(),
            met,
        });
    }

    /// A figure reported for information only: in the JSON and the markdown, not held to a
    /// goal and not in the chart of goals.
    pub fn figure(&mut self, name: &str, measured: f64, unit: &str, note: &str) {
        self.figures.push(Figure {
            name: name.to_owned(),
            measured,
            unit: unit.to_owned(),
            note: note.to_owned(),
        });
    }

    pub fn skip(&mut self, why: String) {
        eprintln!("    skipped: {why}");
        self.skipped.push(why);
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let json = serde_json::to_string_pretty(self)?;
        for (name, text) in [
            ("latest.json", json + "\n"),
            ("latest.md", self.markdown()),
            ("ratios.svg", self.svg()),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let mode = if self.settings.smoke {
            " (smoke: not a measurement)"
        } else {
            ""
        };
        let _ = writeln!(
            md,
            "Measured {} on {} cores (Linux {}){mode}; {} round(s) of {} s per server, servers taking turns.\n",
            self.generated,
            self.machine.cores,
            self.machine.kernel,
            self.settings.rounds,
            self.settings.duration.as_secs_f64(),
        );
        if !self.goals.is_empty() {
            let _ = writeln!(md, "| goal | measured | goal | met |\n|---|---:|---:|:-:|");
        }
        for goal in &self.goals {
            let _ = writeln!(
                md,
                "| {} | {} {} | {} | {} |",
                goal.name,
                number(goal.measured),
                goal.unit,
                goal.target_text(),
                if goal.met { "yes" } else { "**no**" }
            );
        }
        if !self.figures.is_empty() {
            let _ = writeln!(
                md,
                "\n**For information (no goal)**\n\n| figure | measured | note |\n|---|---:|---|"
            );
            for figure in &self.figures {
                let _ = writeln!(
                    md,
                    "| {} | {} {} | {} |",
                    figure.name,
                    number(figure.measured),
                    figure.unit,
                    figure.note
                );
            }
        }
        for table in &self.tables {
            let _ = writeln!(md, "\n**{}**\n", table.title);
            let _ = writeln!(md, "| {} |", table.columns.join(" | "));
            let _ = writeln!(
                md,
                "|{}",
                table
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, _)| if i == 0 { "---|" } else { "---:|" })
                    .collect::<String>()
            );
            for row in &table.rows {
                let _ = writeln!(md, "| {} |", row.join(" | "));
            }
        }
        if !self.skipped.is_empty() {
            let _ = writeln!(md, "\nSkipped:");
            for why in &self.skipped {
                let _ = writeln!(md, "- {why}");
            }
        }
        md
    }

    /// Horizontal bars, one per goal, on a scale where 1.0 is the goal (capped at 4).
    pub fn svg(&self) -> String {
        const MAX: f64 = 4.0;
        let (label_w, bar_w, row_h, top) = (330.0, 420.0, 26.0, 46.0);
        let width = label_w + bar_w + 150.0;
        let height = top + row_h * self.goals.len() as f64 + 40.0;
        let x = |score: f64| label_w + bar_w * (score.clamp(0.0, MAX) / MAX);
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">"#
        );
        let _ = writeln!(
            svg,
            r##"<rect width="100%" height="100%" fill="#ffffff"/>"##
        );
        let _ = writeln!(
            svg,
            r##"<text x="10" y="22" font-size="15" font-weight="bold">berth against its goals: measured ÷ goal (1.0 = goal, right is better)</text>"##
        );
        for (i, goal) in self.goals.iter().enumerate() {
            let y = top + row_h * i as f64;
            let score = goal.score();
            let color = if goal.met { "#2f9e44" } else { "#e03131" };
            let _ = writeln!(
                svg,
                r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
                label_w - 8.0,
                y + 15.0,
                escape(&goal.name)
            );
            let _ = writeln!(
                svg,
                r#"<rect x="{label_w}" y="{}" width="{:.1}" height="{}" fill="{color}"/>"#,
                y + 3.0,
                x(score) - label_w,
                row_h - 8.0
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{}">{:.2} ({} {}, goal {})</text>"#,
                x(score) + 6.0,
                y + 15.0,
                score,
                number(goal.measured),
                escape(&goal.unit),
                escape(&goal.target_text())
            );
        }
        let bottom = top + row_h * self.goals.len() as f64;
        for tick in [0.0, 1.0, 2.0, 3.0, 4.0] {
            let _ = writeln!(
                svg,
                r##"<line x1="{0:.1}" y1="{top}" x2="{0:.1}" y2="{bottom}" stroke="{1}" stroke-dasharray="{2}"/><text x="{0:.1}" y="{3}" text-anchor="middle">{4}</text>"##,
                x(tick),
                if tick == 1.0 { "#000000" } else { "#cccccc" },
                if tick == 1.0 { "4 3" } else { "2 4" },
                bottom + 16.0,
                tick
            );
        }
        let _ = writeln!(svg, "</svg>");
        svg
    }
}

/// A number as a person would write it: few decimals, fewer as it grows.
pub fn number(value: f64) -> String {
    if value == 0.0 || value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings() -> Settings {
        Settings {
            smoke: true,
            rounds: 1,
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            swaps: 2,
            many_components: 10,
        }
    }

    #[test]
    fn goals_are_met_in_their_direction() {
        let mut report = Report::new(&settings());
        report.goal("throughput", 2.5, Better::Higher, 2.0, "×");
        report.goal("latency", 0.5, Better::Lower, 1.0 / 3.0, "×");
        report.goal("failures", 0.0, Better::Lower, 0.0, "failures");
        let met: Vec<bool> = report.goals.iter().map(|g| g.met).collect();
        assert_eq!(met, [true, false, true]);
        assert_eq!(report.goals[0].score(), 1.25);
        assert!((report.goals[1].score() - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(report.goals[2].score(), 1.0);
    }

    #[test]
    fn figures_are_listed_apart_from_the_goals() {
        let mut report = Report::new(&settings());
        report.goal("saga: flows/s", 480.0, Better::Higher, 500.0, "flows/s");
        report.figure("saga: postgres ÷ embedded", 0.5, "×", "one host");
        let md = report.markdown();
        assert!(md.contains("| saga: postgres ÷ embedded | 0.50 × | one host |"));
        let goals = md.find("| goal |").unwrap();
        let figures = md.find("For information").unwrap();
        assert!(goals < figures);
        assert!(!report.svg().contains("postgres"));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["goals"].as_array().unwrap().len(), 1);
        assert_eq!(json["figures"][0]["measured"], 0.5);
    }

    #[test]
    fn the_outputs_name_every_goal() {
        let mut report = Report::new(&settings());
        report.goal("hello <vs> native", 0.5, Better::Higher, 0.4, "×");
        let svg = report.svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("hello &lt;vs&gt; native"));
        assert!(
            report
                .markdown()
                .contains("| hello <vs> native | 0.50 × | ≥ 0.40 × | yes |")
        );
    }
}
