//! Renders a [`Document`] as one self-contained HTML page: inline CSS, SVG figures inlined,
//! no scripts and no external resources, so the file can be mailed or opened offline.

use super::document::{Block, Document, Table};
use super::plot::escape;

const STYLE: &str = r#"
body { margin: 0; background: #f5f6f8; color: #1b1d21;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 20px 36px 64px; background: #fff; }
h1 { font-size: 1.75em; margin: 0.5em 0 0.6em; }
h2 { font-size: 1.3em; margin-top: 2em; padding-bottom: 4px; border-bottom: 1px solid #dde1e6; }
h3 { font-size: 1.08em; margin-top: 1.4em; }
table { border-collapse: collapse; margin: 10px 0 16px; font-size: 13.5px; display: block; overflow-x: auto; }
th, td { border: 1px solid #d9dde3; padding: 4px 9px; vertical-align: top; }
th { background: #eef1f5; text-align: left; }
td.long { min-width: 16em; }
tbody tr:nth-child(even) { background: #f9fafb; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num { white-space: nowrap; }
figure { margin: 14px 0 22px; }
figure svg { max-width: 100%; height: auto; border: 1px solid #eceef1; }
figcaption { color: #555; font-size: 13px; margin-top: 4px; }
pre { background: #f6f8fa; border: 1px solid #e4e7eb; border-radius: 4px; padding: 10px 12px;
  white-space: pre-wrap; overflow-x: auto; font-size: 13px; }
li { margin: 2px 0; }
"#;

pub fn render(doc: &Document) -> String {
    let title = escape(&doc.title);
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n<h1>{title}</h1>\n"
    );
    for block in &doc.blocks {
        out.push_str(&block_html(block));
    }
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

fn block_html(block: &Block) -> String {
    match block {
        Block::Heading(level, text) => format!("<h{level}>{}</h{level}>\n", escape(text)),
        Block::Paragraph(text) => format!("<p>{}</p>\n", escape(text)),
        Block::List(items) => {
            let items: String = items.iter().map(|i| format!("<li>{}</li>\n", escape(i))).collect();
            format!("<ul>\n{items}</ul>\n")
        }
        Block::Table(table) => table_html(table),
        Block::Code(text) => format!("<pre>{}</pre>\n", escape(text)),
        Block::Figure(f) => {
            format!("<figure>\n{}<figcaption>{}</figcaption>\n</figure>\n", f.svg, escape(&f.caption))
        }
    }
}

fn table_html(t: &Table) -> String {
    let class = |column: usize| if t.numeric[column] { " class=\"num\"" } else { "" };
    let mut out = String::from("<table>\n<thead><tr>");
    for (c, h) in t.header.iter().enumerate() {
        out.push_str(&format!("<th{}>{}</th>", class(c), escape(h)));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in &t.rows {
        out.push_str("<tr>");
        for (c, cell) in row.iter().enumerate() {
            // Long prose (the notes) gets a floor on its width, or the browser squeezes it
            // into a tall thin column beside the unbreakable numbers.
            let class = if !t.numeric[c] && cell.chars().count() > 40 { " class=\"long\"" } else { class(c) };
            out.push_str(&format!("<td{class}>{}</td>", escape(cell)));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
    out
}
