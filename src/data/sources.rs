//! Corpus sources: where documents come from before tokenisation.
//!
//! - `builtin:stories`: the generated story corpus (see `stories`), no download;
//! - a `.txt` file: one document, or several separated by lines reading `<|endoftext|>`
//!   (the layout of the TinyStories text dumps);
//! - a `.jsonl` file: one JSON object per line, the text in `data.text_field`;
//! - a `.parquet` file (Hugging Face dataset shards): the `data.text_field` column;
//! - a directory: every `.txt` / `.jsonl` / `.parquet` file in it, in name order;
//! - `hf:<owner>/<dataset>[:<path prefix>]`: the dataset's parquet files (those whose path
//!   starts with the prefix, e.g. `cosmopedia-v2/`) from the hub (feature `hub`).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use parquet::schema::types::Type;

use super::stories;

/// A resolved corpus source.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    Stories { bytes: usize, seed: u64 },
    Files(Vec<PathBuf>),
}

impl Source {
    /// Resolves `data.source`. Fails (before any work) if a file is missing or of an unknown kind.
    pub fn resolve(spec: &str, builtin_bytes: usize, corpus_seed: u64) -> Result<Self> {
        if let Some(name) = spec.strip_prefix("builtin:") {
            if name != "stories" {
                bail!("unknown built-in corpus `{name}`; available: builtin:stories");
            }
            if builtin_bytes == 0 {
                bail!("data.builtin_bytes is 0: the built-in corpus would be empty");
            }
            return Ok(Source::Stories { bytes: builtin_bytes, seed: corpus_seed });
        }
        if let Some(dataset) = spec.strip_prefix("hf:") {
            return Ok(Source::Files(hub::download_parquet(dataset)?));
        }
        let path = PathBuf::from(spec);
        if !path.exists() {
            bail!(
                "data source {} not found; give a .txt/.jsonl/.parquet file or folder, a prepared \
                 dataset folder, or builtin:stories",
                path.display()
            );
        }
        if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
                .with_context(|| format!("listing {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| kind_of(p).is_some())
                .collect();
            files.sort();
            if files.is_empty() {
                bail!("folder {} has no .txt, .jsonl or .parquet files", path.display());
            }
            return Ok(Source::Files(files));
        }
        if kind_of(&path).is_none() {
            bail!("cannot read {}: unknown extension (expected .txt, .jsonl or .parquet)", path.display());
        }
        Ok(Source::Files(vec![path]))
    }

    /// Calls `f` with every document, in a fixed order.
    pub fn for_each_doc(&self, text_field: &str, mut f: impl FnMut(String) -> Result<()>) -> Result<()> {
        match self {
            Source::Stories { bytes, seed } => {
                for story in stories::generate(*seed, *bytes) {
                    f(story)?;
                }
            }
            Source::Files(files) => {
                for file in files {
                    let read = match kind_of(file) {
                        Some(Kind::Txt) => read_txt(file, &mut f),
                        Some(Kind::Jsonl) => read_jsonl(file, text_field, &mut f),
                        Some(Kind::Parquet) => read_parquet(file, text_field, &mut f),
                        None => unreachable!("resolve() keeps only known kinds"),
                    };
                    read.with_context(|| format!("reading {}", file.display()))?;
                }
            }
        }
        Ok(())
    }

    /// Total size in bytes, for the progress bar.
    pub fn approx_bytes(&self) -> u64 {
        match self {
            Source::Stories { bytes, .. } => *bytes as u64,
            Source::Files(files) => files.iter().filter_map(|f| f.metadata().ok()).map(|m| m.len()).sum(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Txt,
    Jsonl,
    Parquet,
}

fn kind_of(path: &Path) -> Option<Kind> {
    match path.extension()?.to_str()? {
        "txt" => Some(Kind::Txt),
        "jsonl" => Some(Kind::Jsonl),
        "parquet" => Some(Kind::Parquet),
        _ => None,
    }
}

const TXT_SEPARATOR: &str = "<|endoftext|>";

fn read_txt(path: &Path, f: &mut impl FnMut(String) -> Result<()>) -> Result<()> {
    let bytes = std::fs::read(path)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow!("not valid UTF-8 (byte {}); convert the file to UTF-8", e.utf8_error().valid_up_to())
    })?;
    if text.lines().any(|l| l.trim() == TXT_SEPARATOR) {
        let mut doc = String::new();
        for line in text.lines() {
            if line.trim() == TXT_SEPARATOR {
                emit(std::mem::take(&mut doc), f)?;
            } else {
                doc.push_str(line);
                doc.push('\n');
            }
        }
        emit(doc, f)
    } else {
        emit(text, f)
    }
}

fn read_jsonl(path: &Path, field: &str, f: &mut impl FnMut(String) -> Result<()>) -> Result<()> {
    let reader = BufReader::new(File::open(path)?);
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| anyhow!("line {}: not valid JSON: {e}", i + 1))?;
        match value.get(field) {
            Some(serde_json::Value::String(s)) => emit(s.clone(), f)?,
            Some(serde_json::Value::Null) => {}
            Some(other) => bail!("line {}: field `{field}` is not a string but {other}", i + 1),
            None => {
                let keys: Vec<String> =
                    value.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
                bail!(
                    "line {}: no field `{field}`; set data.text_field to one of: {}",
                    i + 1,
                    keys.join(", ")
                );
            }
        }
    }
    Ok(())
}

fn read_parquet(path: &Path, field: &str, f: &mut impl FnMut(String) -> Result<()>) -> Result<()> {
    let reader = SerializedFileReader::new(File::open(path)?)
        .map_err(|e| anyhow!("not a readable parquet file: {e}"))?;
    let schema = reader.metadata().file_metadata().schema_descr().root_schema().clone();
    let column = schema.get_fields().iter().find(|c| c.name() == field).cloned().ok_or_else(|| {
        let names: Vec<&str> = schema.get_fields().iter().map(|c| c.name()).collect();
        anyhow!("no column `{field}`; set data.text_field to one of: {}", names.join(", "))
    })?;
    let projection = Type::group_type_builder(schema.name()).with_fields(vec![column]).build()?;
    for row in reader.get_row_iter(Some(projection))? {
        let row = row?;
        for (_, value) in row.get_column_iter() {
            match value {
                Field::Str(s) => emit(s.clone(), f)?,
                Field::Null => {}
                other => bail!("column `{field}` holds {other:?}, not text"),
            }
        }
    }
    Ok(())
}

/// Passes on a document, dropping the end-of-text control byte (the byte tokenizer's document
/// separator) so that boundaries stay unambiguous, and skipping empty documents.
fn emit(mut doc: String, f: &mut impl FnMut(String) -> Result<()>) -> Result<()> {
    if doc.contains('\u{3}') {
        doc.retain(|c| c != '\u{3}');
    }
    if doc.trim().is_empty() {
        return Ok(());
    }
    f(doc)
}

#[cfg(feature = "hub")]
mod hub {
    use super::*;

    /// Downloads (or finds in the local hub cache) the parquet files of a dataset repository
    /// whose paths start with the optional prefix (`owner/name:prefix`).
    pub fn download_parquet(spec: &str) -> Result<Vec<PathBuf>> {
        let (dataset, prefix) = spec.split_once(':').unwrap_or((spec, ""));
        let api = hf_hub::api::sync::Api::new().map_err(|e| anyhow!("hub client: {e}"))?;
        let repo = api.dataset(dataset.to_string());
        let info = repo.info().map_err(|e| {
            anyhow!(
                "cannot reach the Hugging Face hub for dataset `{dataset}` ({e}); if you are offline, \
                 download its parquet files and set data.source to their folder"
            )
        })?;
        let mut files = Vec::new();
        for sibling in info.siblings {
            if sibling.rfilename.ends_with(".parquet") && sibling.rfilename.starts_with(prefix) {
                let path = repo
                    .get(&sibling.rfilename)
                    .map_err(|e| anyhow!("downloading {}: {e}", sibling.rfilename))?;
                files.push(path);
            }
        }
        if files.is_empty() {
            bail!("dataset `{dataset}` has no parquet files under `{prefix}` on the hub");
        }
        files.sort();
        Ok(files)
    }
}

#[cfg(not(feature = "hub"))]
mod hub {
    use super::*;

    pub fn download_parquet(dataset: &str) -> Result<Vec<PathBuf>> {
        bail!(
            "`hf:{dataset}` needs the hub feature: rebuild with `cargo build --release --features hub`, \
             or download the dataset's parquet files and set data.source to their folder"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("archlab-sources-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn collect(source: &Source, field: &str) -> Result<Vec<String>> {
        let mut docs = Vec::new();
        source.for_each_doc(field, |d| {
            docs.push(d);
            Ok(())
        })?;
        Ok(docs)
    }

    #[test]
    fn txt_splits_on_endoftext_lines() {
        let p = dir().join("a.txt");
        std::fs::write(&p, "one\ntwo\n<|endoftext|>\nthree\n").unwrap();
        let docs = collect(&Source::resolve(p.to_str().unwrap(), 0, 0).unwrap(), "text").unwrap();
        assert_eq!(docs, vec!["one\ntwo\n".to_string(), "three\n".to_string()]);
    }

    #[test]
    fn jsonl_reads_the_chosen_field_and_names_missing_ones() {
        let p = dir().join("b.jsonl");
        std::fs::write(&p, "{\"story\": \"hello\", \"id\": 1}\n\n{\"story\": \"world\"}\n").unwrap();
        let src = Source::resolve(p.to_str().unwrap(), 0, 0).unwrap();
        assert_eq!(collect(&src, "story").unwrap(), vec!["hello", "world"]);
        let err = format!("{:#}", collect(&src, "text").unwrap_err());
        assert!(err.contains("no field `text`") && err.contains("story"), "{err}");
    }

    #[test]
    fn parquet_reads_a_text_column() {
        use parquet::data_type::{ByteArray, ByteArrayType};
        use parquet::file::properties::WriterProperties;
        use parquet::file::writer::SerializedFileWriter;

        let p = dir().join("c.parquet");
        let schema = Arc::new(
            parquet::schema::parser::parse_message_type(
                "message schema { OPTIONAL BYTE_ARRAY text (UTF8); REQUIRED INT64 id; }",
            )
            .unwrap(),
        );
        let props = Arc::new(
            WriterProperties::builder().set_compression(parquet::basic::Compression::SNAPPY).build(),
        );
        let mut writer = SerializedFileWriter::new(File::create(&p).unwrap(), schema, props).unwrap();
        let mut group = writer.next_row_group().unwrap();
        let texts: Vec<ByteArray> = vec!["first doc".into(), "second doc".into()];
        let mut col = group.next_column().unwrap().unwrap();
        col.typed::<ByteArrayType>().write_batch(&texts, Some(&[1, 0, 1]), None).unwrap();
        col.close().unwrap();
        let mut col = group.next_column().unwrap().unwrap();
        col.typed::<parquet::data_type::Int64Type>().write_batch(&[1, 2, 3], None, None).unwrap();
        col.close().unwrap();
        group.close().unwrap();
        writer.close().unwrap();

        let src = Source::resolve(p.to_str().unwrap(), 0, 0).unwrap();
        assert_eq!(collect(&src, "text").unwrap(), vec!["first doc", "second doc"]);
        let err = format!("{:#}", collect(&src, "content").unwrap_err());
        assert!(err.contains("no column `content`"), "{err}");
    }

    #[test]
    fn missing_and_unknown_files_fail_at_resolve() {
        let err = Source::resolve("/nonexistent/corpus.txt", 0, 0).unwrap_err().to_string();
        assert!(err.contains("not found"), "{err}");
        let p = dir().join("d.csv");
        std::fs::write(&p, "x").unwrap();
        assert!(Source::resolve(p.to_str().unwrap(), 0, 0).is_err());
    }
}
