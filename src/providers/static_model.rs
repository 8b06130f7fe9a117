//! Static embeddings: one vector per vocabulary token, distilled once from the local
//! transformer (the model2vec recipe), so embedding a text is a table look-up and a mean.
//!
//! Distillation ([`distill`]) runs every vocabulary token through the teacher alone, as
//! `[CLS] token [SEP]`, keeps the mean-pooled output, projects the vectors onto their
//! top principal components (PCA, centred, [`STATIC_DIMS`] of them), and scales each row
//! by a frequency weight: token ids are taken as frequency ranks (Zipf), `p_r ∝ 1/(r+1)`,
//! and the row is multiplied by `a / (a + p_r)` (smooth inverse frequency), so common
//! sub-words count less. Embedding ([`StaticEmbedder`]) tokenises without special tokens,
//! drops unknown tokens, averages the rows and normalises to unit length.
//!
//! The table is written next to the teacher's files as [`TABLE_FILE`]: a header (magic,
//! vocabulary size, dimension) and little-endian `f32` rows. `trawl setup` builds it.
//! Pure computation apart from [`StaticTable::read`] and [`StaticTable::write`].

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use super::ProviderError;

/// The dimension of the distilled table.
pub const STATIC_DIMS: usize = 256;
/// The table's file name in the model directory.
pub const TABLE_FILE: &str = "static256.bin";
/// The smooth-inverse-frequency constant of the weighting (model2vec's default).
pub const SIF_A: f64 = 1e-4;
/// Tokens per text averaged at most: beyond this a snippet's mean barely moves.
pub const MAX_TOKENS: usize = 4_096;
const MAGIC: &[u8; 8] = b"TRAWLST1";

/// One vector per token id: `rows[id * dim .. (id + 1) * dim]`.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticTable {
    pub dim: usize,
    pub rows: Vec<f32>,
}

impl StaticTable {
    pub fn vocab_size(&self) -> usize {
        self.rows.len().checked_div(self.dim).unwrap_or(0)
    }

    /// The unit-length mean of the rows of `ids` (ids outside the table ignored); a zero
    /// vector when none is left.
    pub fn embed_ids(&self, ids: &[u32]) -> Vec<f32> {
        let mut sum = vec![0f32; self.dim];
        let vocab = self.vocab_size();
        for &id in ids.iter().take(MAX_TOKENS) {
            let id = id as usize;
            if id < vocab {
                let row = &self.rows[id * self.dim..(id + 1) * self.dim];
                for (s, r) in sum.iter_mut().zip(row) {
                    *s += r;
                }
            }
        }
        let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            for s in &mut sum {
                *s /= norm;
            }
        }
        sum
    }

    pub fn read(path: &Path) -> std::io::Result<StaticTable> {
        let mut bytes = Vec::new();
        std::fs::File::open(path)?.read_to_end(&mut bytes)?;
        let bad = |why: &str| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not a static embedding table: {why}", path.display()),
            )
        };
        if bytes.len() < 16 || &bytes[..8] != MAGIC {
            return Err(bad("no header"));
        }
        let vocab = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
        let dim = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
        let body = &bytes[16..];
        if dim == 0 || body.len() != vocab * dim * 4 {
            return Err(bad("its size does not match its header"));
        }
        let rows = body
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        Ok(StaticTable { dim, rows })
    }

    /// Writes the table to `path` through a temporary file renamed into place, so a
    /// reader never sees half a table.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        {
            let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            f.write_all(MAGIC)?;
            f.write_all(&(self.vocab_size() as u32).to_le_bytes())?;
            f.write_all(&(self.dim as u32).to_le_bytes())?;
            for x in &self.rows {
                f.write_all(&x.to_le_bytes())?;
            }
            f.flush()?;
        }
        std::fs::rename(&tmp, path)
    }
}

/// What a distillation needs of the teacher's vocabulary.
pub struct Vocabulary {
    /// Tokens in id order (`tokens[id]`).
    pub tokens: Vec<String>,
    /// The ids wrapped around each token: `[CLS]` before, `[SEP]` after.
    pub prefix: Vec<u32>,
    pub suffix: Vec<u32>,
}

impl Vocabulary {
    /// The vocabulary of a BERT WordPiece tokenizer.
    pub fn of(tokenizer: &Tokenizer) -> Result<Vocabulary, String> {
        let vocab = tokenizer.get_vocab(true);
        let mut tokens =
            vec![String::new(); vocab.values().map(|&i| i as usize + 1).max().unwrap_or(0)];
        for (t, &i) in &vocab {
            tokens[i as usize] = t.clone();
        }
        let id = |t: &str| {
            vocab
                .get(t)
                .copied()
                .ok_or_else(|| format!("the tokenizer has no {t} token"))
        };
        Ok(Vocabulary {
            prefix: vec![id("[CLS]")?],
            suffix: vec![id("[SEP]")?],
            tokens,
        })
    }

    /// Tokens that never stand for text: `[unused…]`, `[PAD]` and other bracketed
    /// specials, and ids no token has. Their rows stay zero.
    fn skipped(token: &str) -> bool {
        token.is_empty() || (token.starts_with('[') && token.ends_with(']'))
    }
}

/// Distils a static table from `teacher`, which embeds batches of token id sequences
/// (each `prefix + [id] + suffix`). Deterministic for a deterministic teacher.
pub fn distill(
    vocab: &Vocabulary,
    dims: usize,
    mut teacher: impl FnMut(&[&[u32]]) -> Result<Vec<Vec<f32>>, ProviderError>,
) -> Result<StaticTable, ProviderError> {
    let ids: Vec<u32> = (0..vocab.tokens.len() as u32)
        .filter(|&i| !Vocabulary::skipped(&vocab.tokens[i as usize]))
        .collect();
    if ids.is_empty() {
        return Err(ProviderError::Inference("the vocabulary is empty".into()));
    }
    let seqs: Vec<Vec<u32>> = ids
        .iter()
        .map(|&i| {
            let mut s = vocab.prefix.clone();
            s.push(i);
            s.extend(&vocab.suffix);
            s
        })
        .collect();
    let mut vectors: Vec<Vec<f32>> = Vec::with_capacity(ids.len());
    for chunk in seqs.chunks(2_048) {
        let refs: Vec<&[u32]> = chunk.iter().map(Vec::as_slice).collect();
        vectors.extend(teacher(&refs)?);
    }
    let d = vectors.first().map_or(0, Vec::len);
    if d == 0 || vectors.iter().any(|v| v.len() != d) {
        return Err(ProviderError::Inference(
            "the teacher gave vectors of no or mixed dimensions".into(),
        ));
    }
    let dims = dims.min(d);
    let n = vectors.len();
    let mut x = nalgebra::DMatrix::<f64>::from_fn(n, d, |r, c| f64::from(vectors[r][c]));
    let mean = x.row_mean();
    for mut row in x.row_iter_mut() {
        row -= &mean;
    }
    let cov = (x.transpose() * &x) / n as f64;
    let eigen = nalgebra::SymmetricEigen::new(cov);
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| eigen.eigenvalues[b].total_cmp(&eigen.eigenvalues[a]));
    let mut basis = nalgebra::DMatrix::<f64>::zeros(d, dims);
    for (k, &i) in order.iter().take(dims).enumerate() {
        let mut v = eigen.eigenvectors.column(i).into_owned();
        // An eigenvector's sign is arbitrary: fix it (largest component positive) so the
        // same teacher always gives the same table.
        let lead = v
            .iter()
            .copied()
            .fold(0f64, |m, c| if c.abs() > m.abs() { c } else { m });
        if lead < 0.0 {
            v = -v;
        }
        basis.set_column(k, &v);
    }
    let projected = x * basis;
    let harmonic: f64 = (0..n).map(|r| 1.0 / (r as f64 + 1.0)).sum();
    let mut rows = vec![0f32; vocab.tokens.len() * dims];
    for (r, &id) in ids.iter().enumerate() {
        let p = (1.0 / (r as f64 + 1.0)) / harmonic;
        let weight = SIF_A / (SIF_A + p);
        let out = &mut rows[id as usize * dims..(id as usize + 1) * dims];
        for (k, o) in out.iter_mut().enumerate() {
            *o = (projected[(r, k)] * weight) as f32;
        }
    }
    Ok(StaticTable { dim: dims, rows })
}

/// Embeds texts with a static table and the teacher's tokenizer.
pub struct StaticEmbedder {
    tokenizer: Tokenizer,
    table: StaticTable,
    unknown: Option<u32>,
}

impl StaticEmbedder {
    /// The table at `table` with the tokenizer of the model in `model_dir`.
    pub fn load(model_dir: &Path, table: &Path) -> Result<StaticEmbedder, ProviderError> {
        let fail = |detail: String| ProviderError::ModelLoad {
            dir: model_dir.display().to_string(),
            detail,
        };
        let mut tokenizer = Tokenizer::from_file(model_dir.join("tokenizer.json"))
            .map_err(|e| fail(format!("tokenizer.json: {e}")))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| fail(format!("tokenizer.json: {e}")))?;
        let table = StaticTable::read(table).map_err(|e| {
            fail(format!(
                "{e}: run `trawl setup` to distil it, or set embedding.kind = \"transformer\""
            ))
        })?;
        let unknown = tokenizer.token_to_id("[UNK]");
        Ok(StaticEmbedder {
            tokenizer,
            table,
            unknown,
        })
    }

    pub fn dimension(&self) -> usize {
        self.table.dim
    }

    /// Unit-length vectors of `texts`, in order.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ProviderError> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), false)
            .map_err(|e| ProviderError::Inference(e.to_string()))?;
        Ok(encodings
            .iter()
            .map(|e| {
                let ids: Vec<u32> = e
                    .get_ids()
                    .iter()
                    .copied()
                    .filter(|&i| Some(i) != self.unknown)
                    .collect();
                self.table.embed_ids(&ids)
            })
            .collect())
    }
}

/// Where the static table of the model in `model_dir` lives.
pub fn table_path(model_dir: &Path) -> PathBuf {
    model_dir.join(TABLE_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_is_the_unit_mean_of_its_rows() {
        let table = StaticTable {
            dim: 2,
            rows: vec![1.0, 0.0, 0.0, 2.0, 3.0, 4.0],
        };
        let v = table.embed_ids(&[0, 1]);
        let s = 1.0 / 5f32.sqrt();
        assert!(
            (v[0] - s).abs() < 1e-6 && (v[1] - 2.0 * s).abs() < 1e-6,
            "{v:?}"
        );
        assert_eq!(table.embed_ids(&[2]), vec![0.6, 0.8]);
        // Unknown ids are ignored; nothing known is a zero vector.
        assert_eq!(table.embed_ids(&[9]), vec![0.0, 0.0]);
        assert_eq!(table.embed_ids(&[2, 9]), vec![0.6, 0.8]);
    }

    #[test]
    fn tables_round_trip_through_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TABLE_FILE);
        let table = StaticTable {
            dim: 3,
            rows: (0..12).map(|i| i as f32 * 0.5 - 1.0).collect(),
        };
        table.write(&path).unwrap();
        assert_eq!(StaticTable::read(&path).unwrap(), table);
        std::fs::write(&path, b"TRAWLST1\x02\0\0\0\x03\0\0\0short").unwrap();
        assert!(
            StaticTable::read(&path)
                .unwrap_err()
                .to_string()
                .contains("size")
        );
    }

    /// A tiny teacher: a fixed vector per token id, summed with the [CLS]/[SEP] vectors.
    fn tiny_teacher(seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>, ProviderError> {
        Ok(seqs
            .iter()
            .map(|s| {
                let mut v = vec![0f32; 4];
                for &id in *s {
                    let f = id as f32;
                    for (k, x) in v.iter_mut().enumerate() {
                        *x += ((f + 1.0) * (k as f32 + 1.0)).sin();
                    }
                }
                v
            })
            .collect())
    }

    fn tiny_vocab() -> Vocabulary {
        Vocabulary {
            tokens: [
                "[PAD]",
                "[CLS]",
                "[SEP]",
                "[unused0]",
                "a",
                "b",
                "c",
                "d",
                "e",
                "##f",
            ]
            .map(String::from)
            .to_vec(),
            prefix: vec![1],
            suffix: vec![2],
        }
    }

    #[test]
    fn distillation_of_a_tiny_model_is_deterministic_and_leaves_specials_zero() {
        let vocab = tiny_vocab();
        let a = distill(&vocab, 2, tiny_teacher).unwrap();
        let b = distill(&vocab, 2, tiny_teacher).unwrap();
        assert_eq!(a, b, "the same teacher gives the same table");
        assert_eq!((a.dim, a.vocab_size()), (2, 10));
        // Special tokens keep zero rows; every real token gets a non-zero one.
        for id in 0..4 {
            assert!(
                a.rows[id * 2..id * 2 + 2].iter().all(|&x| x == 0.0),
                "row {id}"
            );
        }
        for id in 4..10 {
            assert!(
                a.rows[id * 2..id * 2 + 2].iter().any(|&x| x != 0.0),
                "row {id}"
            );
        }
    }

    #[test]
    fn a_full_rank_projection_keeps_the_teachers_distances_and_orders_by_variance() {
        let vocab = tiny_vocab();
        let table = distill(&vocab, 4, tiny_teacher).unwrap();
        let ids: Vec<u32> = (4..10).collect();
        let n = ids.len();
        let harmonic: f64 = (0..n).map(|r| 1.0 / (r as f64 + 1.0)).sum();
        // Undo the weights: row / (a / (a + p_r)).
        let unweighted: Vec<Vec<f64>> = ids
            .iter()
            .enumerate()
            .map(|(r, &id)| {
                let p = (1.0 / (r as f64 + 1.0)) / harmonic;
                let w = SIF_A / (SIF_A + p);
                table.rows[id as usize * 4..id as usize * 4 + 4]
                    .iter()
                    .map(|&x| f64::from(x) / w)
                    .collect()
            })
            .collect();
        let teacher: Vec<Vec<f32>> = ids
            .iter()
            .map(|&id| tiny_teacher(&[&[1, id, 2]]).unwrap().remove(0))
            .collect();
        let dist = |a: &[f64], b: &[f64]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).powi(2))
                .sum::<f64>()
                .sqrt()
        };
        for i in 0..n {
            for j in 0..n {
                let t: Vec<f64> = teacher[i].iter().map(|&x| f64::from(x)).collect();
                let u: Vec<f64> = teacher[j].iter().map(|&x| f64::from(x)).collect();
                let (want, got) = (dist(&t, &u), dist(&unweighted[i], &unweighted[j]));
                assert!(
                    (want - got).abs() < 1e-4 * want.max(1.0),
                    "{i} {j}: {want} {got}"
                );
            }
        }
        let variance = |k: usize| unweighted.iter().map(|r| r[k] * r[k]).sum::<f64>();
        assert!(
            variance(0) >= variance(1) && variance(1) >= variance(2),
            "PCA order"
        );
        let column_mean: f64 = unweighted.iter().map(|r| r[0]).sum::<f64>() / n as f64;
        assert!(column_mean.abs() < 1e-4, "centred: {column_mean}");
    }

    #[test]
    fn frequent_tokens_weigh_less_than_rare_ones() {
        // Two tokens with the same teacher vector but different ranks.
        let vocab = Vocabulary {
            tokens: ["x", "y", "z"].map(String::from).to_vec(),
            prefix: vec![],
            suffix: vec![],
        };
        let table = distill(&vocab, 1, |seqs: &[&[u32]]| {
            Ok(seqs
                .iter()
                .map(|s| {
                    if s[0] == 1 {
                        vec![-1.0, 0.0]
                    } else {
                        vec![1.0, 0.0]
                    }
                })
                .collect())
        })
        .unwrap();
        // x (rank 0) and z (rank 2) have the same vector; z is rarer, so heavier.
        assert!(
            table.rows[2].abs() > table.rows[0].abs(),
            "{:?}",
            table.rows
        );
        assert_eq!(table.rows[0].signum(), table.rows[2].signum());
    }
}
