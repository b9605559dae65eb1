//! The report as a small document model. Sections are built once from the results and then
//! rendered twice — to Markdown ([`super::markdown`]) and to HTML ([`super::html`]) — so the
//! two reports can never disagree.

/// A titled sequence of blocks.
#[derive(Clone, Debug)]
pub struct Document {
    pub title: String,
    pub blocks: Vec<Block>,
}

#[derive(Clone, Debug)]
pub enum Block {
    /// A section heading; level 2 for sections, 3 for subsections (the title is level 1).
    Heading(u8, String),
    Paragraph(String),
    List(Vec<String>),
    Table(Table),
    /// Preformatted text (generated samples), shown verbatim.
    Code(String),
    Figure(Figure),
}

/// A table whose every cell is filled: a value, or "n/a (why)".
#[derive(Clone, Debug)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Per column: right-aligned (numbers) or left-aligned (names, notes).
    pub numeric: Vec<bool>,
}

impl Table {
    /// A table with the given columns, all left-aligned until [`Table::numeric`] says otherwise.
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        let header: Vec<String> = header.into_iter().map(Into::into).collect();
        let numeric = vec![false; header.len()];
        Self { header, rows: Vec::new(), numeric }
    }

    /// Right-aligns the given columns.
    pub fn numeric(mut self, columns: impl IntoIterator<Item = usize>) -> Self {
        for c in columns {
            self.numeric[c] = true;
        }
        self
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.header.len(), "a row must fill every column");
        self.rows.push(cells);
    }
}

/// An SVG chart: written to `plots/<name>.svg`, referenced from Markdown, inlined in HTML.
#[derive(Clone, Debug)]
pub struct Figure {
    pub name: String,
    pub caption: String,
    pub svg: String,
}

impl Figure {
    /// The figure's path relative to the report directory.
    pub fn path(&self) -> String {
        format!("plots/{}.svg", self.name)
    }
}

impl Document {
    pub fn new(title: &str) -> Self {
        Self { title: title.to_string(), blocks: Vec::new() }
    }

    pub fn heading(&mut self, text: impl Into<String>) {
        self.blocks.push(Block::Heading(2, text.into()));
    }

    pub fn subheading(&mut self, text: impl Into<String>) {
        self.blocks.push(Block::Heading(3, text.into()));
    }

    pub fn paragraph(&mut self, text: impl Into<String>) {
        self.blocks.push(Block::Paragraph(text.into()));
    }

    pub fn list(&mut self, items: Vec<String>) {
        self.blocks.push(Block::List(items));
    }

    pub fn table(&mut self, table: Table) {
        self.blocks.push(Block::Table(table));
    }

    pub fn code(&mut self, text: impl Into<String>) {
        self.blocks.push(Block::Code(text.into()));
    }

    pub fn figure(&mut self, name: impl Into<String>, caption: impl Into<String>, svg: String) {
        self.blocks.push(Block::Figure(Figure { name: name.into(), caption: caption.into(), svg }));
    }

    pub fn figures(&self) -> impl Iterator<Item = &Figure> {
        self.blocks.iter().filter_map(|b| match b {
            Block::Figure(f) => Some(f),
            _ => None,
        })
    }
}
