//! A reader and writer for the safetensors format (<https://github.com/huggingface/safetensors>): an 8-byte
//! little-endian header length, a JSON header `{name: {dtype, shape, data_offsets}}`, then the
//! raw little-endian tensor bytes. Small enough to read directly (memory-mapped) rather than
//! pull in another dependency; sharded checkpoints (`model.safetensors.index.json`) are
//! resolved by [`Checkpoint`].

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use memmap2::Mmap;
use serde::Deserialize;

/// The largest JSON header the format allows (the reference implementation's limit).
const MAX_HEADER_BYTES: u64 = 100_000_000;

#[derive(Debug, Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [usize; 2],
}

/// One `.safetensors` file, memory-mapped.
pub struct SafeTensors {
    path: PathBuf,
    map: Mmap,
    data_start: usize,
    entries: BTreeMap<String, Entry>,
}

/// A tensor read to the host as f32 (from F32, F16, BF16 or F64), row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl SafeTensors {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: the file is only read; a checkpoint being rewritten underneath us would give
        // wrong numbers, not memory unsafety beyond what any reader of a changing file risks.
        let map = unsafe { Mmap::map(&file) }.with_context(|| format!("cannot map {}", path.display()))?;
        let bad = |why: &str| anyhow!("{} is not a safetensors file: {why}", path.display());
        if map.len() < 8 {
            return Err(bad("shorter than its 8-byte header length"));
        }
        let header_len = u64::from_le_bytes(map[..8].try_into().expect("8 bytes"));
        if header_len > MAX_HEADER_BYTES {
            return Err(bad(&format!(
                "a header of {header_len} bytes (the format allows {MAX_HEADER_BYTES})"
            )));
        }
        let data_start = 8usize
            .checked_add(header_len as usize)
            .filter(|&e| e <= map.len())
            .ok_or_else(|| bad("header runs past the end"))?;
        let header: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&map[8..data_start])
            .map_err(|e| bad(&format!("malformed header ({e})")))?;
        let mut entries = BTreeMap::new();
        for (name, value) in header {
            if name == "__metadata__" {
                continue;
            }
            let entry: Entry =
                serde_json::from_value(value).map_err(|e| bad(&format!("entry {name}: {e}")))?;
            let [start, end] = entry.data_offsets;
            if start > end || data_start.checked_add(end).is_none_or(|e| e > map.len()) {
                return Err(bad(&format!("tensor {name} lies outside the file")));
            }
            entries.insert(name, entry);
        }
        Ok(Self { path: path.to_path_buf(), map, data_start, entries })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    fn entry(&self, name: &str) -> Result<(&Entry, &[u8])> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| anyhow!("{} has no tensor `{name}`", self.path.display()))?;
        let [start, end] = entry.data_offsets;
        let bytes = &self.map[self.data_start + start..self.data_start + end];
        let width: usize = match entry.dtype.as_str() {
            "F64" | "I64" => 8,
            "F32" | "I32" => 4,
            "F16" | "BF16" => 2,
            other => {
                bail!("tensor `{name}` has dtype {other}; archlab reads F32, F16, BF16, F64, I64 and I32")
            }
        };
        let expected = entry.shape.iter().try_fold(width, |n, &d| n.checked_mul(d));
        if expected != Some(bytes.len()) {
            bail!("tensor `{name}` in {}: byte size does not match its shape", self.path.display());
        }
        Ok((entry, bytes))
    }

    /// A floating-point tensor, converted to f32.
    pub fn float(&self, name: &str) -> Result<HostTensor> {
        let (entry, bytes) = self.entry(name)?;
        let data: Vec<f32> = match entry.dtype.as_str() {
            "F32" => bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
            "F64" => {
                bytes.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32).collect()
            }
            // bf16 is the top half of an f32.
            "BF16" => bytes
                .chunks_exact(2)
                .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
                .collect(),
            "F16" => bytes.chunks_exact(2).map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))).collect(),
            other => bail!("tensor `{name}` has dtype {other}, expected a floating-point type"),
        };
        Ok(HostTensor { shape: entry.shape.clone(), data })
    }

    /// An integer tensor, as i64.
    pub fn int(&self, name: &str) -> Result<(Vec<usize>, Vec<i64>)> {
        let (entry, bytes) = self.entry(name)?;
        let data = match entry.dtype.as_str() {
            "I64" => bytes.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect(),
            "I32" => {
                bytes.chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().unwrap()) as i64).collect()
            }
            other => bail!("tensor `{name}` has dtype {other}, expected I64 or I32"),
        };
        Ok((entry.shape.clone(), data))
    }
}

/// IEEE half precision → f32 (subnormals, infinities and NaN included).
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: frac · 2⁻²⁴, exactly representable in f32.
            let magnitude = frac as f32 * 2f32.powi(-24);
            return if sign != 0 { -magnitude } else { magnitude };
        }
        (31, _) => sign | 0x7f80_0000 | (frac << 13),
        _ => sign | ((exp + 112) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

/// Writes f32 tensors as one `.safetensors` file, atomically: header entries and data in name
/// order (as the reference implementation writes them), the header padded with spaces to a
/// multiple of 8 bytes so that every tensor is aligned, `{"format": "pt"}` as metadata (what
/// `transformers` expects of a PyTorch checkpoint).
pub fn write_f32(path: &Path, tensors: &BTreeMap<String, HostTensor>) -> Result<()> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut offset = 0usize;
    for (name, t) in tensors {
        if t.shape.iter().product::<usize>() != t.data.len() {
            bail!("tensor `{name}`: shape {:?} does not hold {} values", t.shape, t.data.len());
        }
        let end = offset + 4 * t.data.len();
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut header = serde_json::to_string(&header)?;
    header.push_str(&" ".repeat((8 - header.len() % 8) % 8));
    crate::util::atomic::write_with(path, |w| {
        w.write_all(&(header.len() as u64).to_le_bytes())?;
        w.write_all(header.as_bytes())?;
        for t in tensors.values() {
            for v in &t.data {
                w.write_all(&v.to_le_bytes())?;
            }
        }
        Ok(())
    })
}

/// The weights of a Hugging Face checkpoint folder: `model.safetensors`, or the shards listed
/// in `model.safetensors.index.json`.
pub struct Checkpoint {
    files: Vec<SafeTensors>,
    /// Tensor name → index into `files`.
    index: BTreeMap<String, usize>,
}

impl Checkpoint {
    pub fn open(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let paths: Vec<PathBuf> = if single.exists() {
            vec![single]
        } else if index_path.exists() {
            #[derive(Deserialize)]
            struct Index {
                weight_map: BTreeMap<String, String>,
            }
            let text = std::fs::read_to_string(&index_path)?;
            let index: Index =
                serde_json::from_str(&text).with_context(|| format!("malformed {}", index_path.display()))?;
            let mut shards: Vec<String> = index.weight_map.into_values().collect();
            shards.sort();
            shards.dedup();
            shards.into_iter().map(|s| dir.join(s)).collect()
        } else {
            bail!(
                "{} has no model.safetensors (nor a sharded model.safetensors.index.json); \
                 archlab reads safetensors checkpoints only (convert a pytorch_model.bin with \
                 `transformers`' save_pretrained(safe_serialization=True))",
                dir.display()
            );
        };
        let files = paths.iter().map(|p| SafeTensors::open(p)).collect::<Result<Vec<_>>>()?;
        let mut index = BTreeMap::new();
        for (i, f) in files.iter().enumerate() {
            for name in f.names() {
                index.insert(name.to_string(), i);
            }
        }
        Ok(Self { files, index })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    pub fn float(&self, name: &str) -> Result<HostTensor> {
        let file = self.index.get(name).ok_or_else(|| anyhow!("the checkpoint has no tensor `{name}`"))?;
        self.files[*file].float(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, header: &str, data: &[u8]) {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn written_tensors_read_back_unchanged() {
        let dir = std::env::temp_dir().join(format!("archlab-safetensors-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.safetensors");
        let tensors: BTreeMap<String, HostTensor> = [
            ("b.weight", vec![2, 3], vec![1.0, -2.5, 3.25, f32::MIN_POSITIVE, 0.0, 7e30]),
            ("a", vec![1], vec![-0.0]),
        ]
        .into_iter()
        .map(|(n, shape, data)| (n.to_string(), HostTensor { shape, data }))
        .collect();
        write_f32(&path, &tensors).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        assert_eq!(header_len % 8, 0, "tensors start 8-byte aligned");
        let read = SafeTensors::open(&path).unwrap();
        assert_eq!(read.names().collect::<Vec<_>>(), ["a", "b.weight"]);
        for (name, t) in &tensors {
            let got = read.float(name).unwrap();
            assert_eq!(got.shape, t.shape);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got.data), bits(&t.data), "{name}");
        }
        let bad = [("c".to_string(), HostTensor { shape: vec![2], data: vec![1.0] })].into();
        assert!(write_f32(&dir.join("bad.safetensors"), &bad).unwrap_err().to_string().contains("shape [2]"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_every_float_dtype() {
        let path = std::env::temp_dir().join(format!("archlab-st-{}.safetensors", std::process::id()));
        let mut data = Vec::new();
        data.extend_from_slice(&1.5f32.to_le_bytes());
        data.extend_from_slice(&(-2.25f32).to_le_bytes());
        data.extend_from_slice(&((3.0f32.to_bits() >> 16) as u16).to_le_bytes()); // bf16 3.0
        data.extend_from_slice(&0x3c00u16.to_le_bytes()); // f16 1.0
        data.extend_from_slice(&0xc500u16.to_le_bytes()); // f16 -5.0
        data.extend_from_slice(&7i64.to_le_bytes());
        let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[1],"data_offsets":[8,10]},"c":{"dtype":"F16","shape":[2],"data_offsets":[10,14]},"i":{"dtype":"I64","shape":[1,1],"data_offsets":[14,22]},"__metadata__":{"format":"pt"}}"#;
        write(&path, header, &data);
        let st = SafeTensors::open(&path).unwrap();
        assert_eq!(st.float("a").unwrap(), HostTensor { shape: vec![2], data: vec![1.5, -2.25] });
        assert_eq!(st.float("b").unwrap().data, vec![3.0]);
        assert_eq!(st.float("c").unwrap().data, vec![1.0, -5.0]);
        assert_eq!(st.int("i").unwrap(), (vec![1, 1], vec![7]));
        assert!(st.float("missing").unwrap_err().to_string().contains("no tensor `missing`"));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn rejects_truncated_files() {
        let path = std::env::temp_dir().join(format!("archlab-st-bad-{}.safetensors", std::process::id()));
        write(&path, r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, &[0u8; 8]);
        let err = SafeTensors::open(&path).err().unwrap().to_string();
        assert!(err.contains("outside the file"), "{err}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn half_precision_special_values() {
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
    }

    /// Damaged and crafted files are errors, never panics or overflows.
    #[test]
    fn survives_mutated_files() {
        let path = std::env::temp_dir().join(format!("archlab-st-fuzz-{}.safetensors", std::process::id()));
        let header = r#"{"a":{"dtype":"F32","shape":[2,1],"data_offsets":[0,8]},"h":{"dtype":"F16","shape":[1],"data_offsets":[8,10]},"i":{"dtype":"I64","shape":[1],"data_offsets":[10,18]}}"#;
        let mut valid = (header.len() as u64).to_le_bytes().to_vec();
        valid.extend_from_slice(header.as_bytes());
        valid.extend_from_slice(&[0x3f; 18]);
        for bytes in crate::util::mutate::mutants(&valid, 400, 11) {
            std::fs::write(&path, &bytes).unwrap();
            if let Ok(st) = SafeTensors::open(&path) {
                let names: Vec<String> = st.names().map(String::from).collect();
                for name in names {
                    let _ = st.float(&name);
                    let _ = st.int(&name);
                }
            }
        }
        std::fs::remove_file(&path).unwrap();
    }
}
