//! Renders a [`Document`] as GitHub-flavoured Markdown; figures are referenced as
//! `plots/<name>.svg` files next to the report.

use super::document::{Block, Document, Table};

pub fn render(doc: &Document) -> String {
    let mut out = format!("# {}\n", one_line(&doc.title));
    for block in &doc.blocks {
        out.push('\n');
        match block {
            Block::Heading(level, text) => {
                out.push_str(&format!("{} {}\n", "#".repeat(*level as usize), one_line(text)));
            }
            Block::Paragraph(text) => out.push_str(&format!("{text}\n")),
            Block::List(items) => {
                for item in items {
                    out.push_str(&format!("- {}\n", one_line(item)));
                }
            }
            Block::Table(table) => out.push_str(&table_text(table)),
            Block::Code(text) => out.push_str(&code_block(text)),
            Block::Figure(f) => out.push_str(&format!("![{}]({})\n", one_line(&f.caption), f.path())),
        }
    }
    out
}

pub fn table_text(t: &Table) -> String {
    let line = |cells: &[String]| {
        let cells: Vec<String> = cells.iter().map(|c| cell(c)).collect();
        format!("| {} |\n", cells.join(" | "))
    };
    let rule: Vec<String> = t.numeric.iter().map(|&n| if n { "---:" } else { "---" }.to_string()).collect();
    let mut out = line(&t.header);
    out.push_str(&format!("|{}|\n", rule.join("|")));
    for row in &t.rows {
        out.push_str(&line(row));
    }
    out
}

/// A table cell: pipes escaped, line breaks flattened (either would end the cell or the row).
fn cell(text: &str) -> String {
    one_line(text).replace('|', "\\|")
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A fenced block whose fence is longer than any backtick run inside the text, so generated
/// text containing ``` cannot close it early.
fn code_block(text: &str) -> String {
    let longest_run = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat((longest_run + 1).max(3));
    format!("{fence}text\n{}\n{fence}\n", text.trim_end_matches('\n'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_and_code_cannot_break_out() {
        let mut t = Table::new(["a", "b"]).numeric([1]);
        t.row(vec!["x | y".into(), "line\nbreak".into()]);
        assert_eq!(table_text(&t), "| a | b |\n|---|---:|\n| x \\| y | line break |\n");
        assert_eq!(code_block("say ```hi```"), "````text\nsay ```hi```\n````\n");
    }
}
