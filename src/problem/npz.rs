//! NumPy interop: `.npz` problem files, read and written side by side.

use std::path::Path;
use std::sync::Arc;

use nalgebra::DMatrix;

use super::{nonzero_singular_values, observe, random_start, Problem, ProblemSource, ProblemSpec};
use crate::error::{Error, Result};
use crate::operator::{DenseOperator, Precision, SensingOperator};

/// An array read from the archive: its shape and its values in C (row-major) order.
struct Array {
    shape: Vec<usize>,
    data: Vec<f64>,
}

/// The arrays a problem file may hold.
pub const ARRAYS: [&str; 6] = ["x_star", "sensing", "y", "u0", "v0", "alpha"];

/// The least start scale a file may hold, as the least `--alpha`.
const START_SCALE_MIN: f64 = 1e-100;

/// Array `name`, or `None` if the file has none; `check` sees the shape its header claims
/// before any of its data is inflated (a compressed entry may inflate to far more than the
/// file's size), and refuses what does not fit the arrays read before it.
fn read_array<R: std::io::Read + std::io::Seek>(
    archive: &mut npyz::npz::NpzArchive<R>,
    path: &Path,
    name: &str,
    memory_limit: u64,
    check: &dyn Fn(&[usize]) -> Result<()>,
) -> Result<Option<Array>> {
    let entry = match archive
        .zip_archive()
        .by_name(&npyz::npz::file_name_from_array_name(name))
    {
        Ok(entry) => entry,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(Error::npz(path, format!("cannot read array `{name}`: {e}"))),
    };
    // The header through a buffer of its own size (a small array's whole entry): a buffer of
    // a megabyte for every array was zeroed on its first fill and cost a small problem's load
    // more than its data did. The data is then read in large pieces that bypass the buffer.
    let entry_bytes = usize::try_from(entry.size()).unwrap_or(usize::MAX);
    let capacity = entry_bytes.clamp(1 << 10, 1 << 16);
    let mut reader = std::io::BufReader::with_capacity(capacity, entry);
    let header = npyz::NpyHeader::from_reader(&mut reader)
        .map_err(|e| Error::npz(path, format!("cannot read array `{name}`: {e}")))?;
    let shape: Vec<usize> = header.shape().iter().map(|&s| s as usize).collect();
    check(&shape)?;
    // A header may claim any shape: refuse sizes that overflow or cannot fit in memory before
    // anything is allocated for them.
    let count = match shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)) {
        Some(c) if (c as u64) <= memory_limit / 8 => c,
        _ => {
            return Err(Error::npz(
                path,
                format!("array `{name}` claims shape {shape:?}, too large to load"),
            ))
        }
    };
    let fortran = header.order() == npyz::Order::Fortran;
    let dtype = header.dtype().descr();
    let descr = dtype.to_string();
    // NumPy users write float32 as often as float64; both are read as f64 (exactly), and
    // `sensing_precision` alone decides how the operator is stored. Little-endian, as NumPy
    // writes them on every common machine, in large pieces (npyz reads one element at a time,
    // into a vector that grows as it goes: 35-50 ms for a 30 MB matrix); any other dtype
    // through npyz, which reads the other byte order and names what it cannot.
    let single = descr.contains("f4");
    let read = match descr.as_str() {
        "'<f8'" => read_little_endian(&mut reader, count, entry_bytes, f64::from_le_bytes),
        "'<f4'" => read_little_endian(&mut reader, count, entry_bytes, |b| {
            f64::from(f32::from_le_bytes(b))
        }),
        _ => {
            let file = npyz::NpyFile::with_header(header, reader);
            if single {
                file.into_vec::<f32>()
                    .map(|v| v.into_iter().map(f64::from).collect())
            } else {
                file.into_vec::<f64>()
            }
        }
    };
    let raw: Vec<f64> = match read {
        Ok(v) => v,
        Err(e) if descr.contains("f8") || single => {
            return Err(Error::npz(
                path,
                format!(
                    "array `{name}` is truncated or damaged: its header claims shape {shape:?} \
                     but the data ends early ({e})"
                ),
            ))
        }
        Err(e) => {
            return Err(Error::npz(
                path,
                format!(
                    "array `{name}` must be float64 or float32, found dtype {dtype} ({e}): \
                     write it as `{name}.astype(np.float64)`"
                ),
            ))
        }
    };
    if let Some(bad) = raw.iter().position(|v| !v.is_finite()) {
        return Err(Error::npz(
            path,
            format!(
                "array `{name}` holds a non-finite value ({}) at flat index {bad}",
                raw[bad]
            ),
        ));
    }
    let data = if fortran {
        fortran_to_c(&raw, &shape)
    } else {
        raw
    };
    Ok(Some(Array { shape, data }))
}

/// `count` values of `B` little-endian bytes each, converted by `from`, read a megabyte at a
/// time (the whole matrix is never held twice), from an entry of `entry_bytes` bytes (as its
/// archive says: the vector is never reserved larger than the entry can fill, whatever shape
/// a header claims).
fn read_little_endian<const B: usize>(
    reader: &mut impl std::io::Read,
    count: usize,
    entry_bytes: usize,
    from: impl Fn([u8; B]) -> f64,
) -> std::io::Result<Vec<f64>> {
    let mut out = crate::operator::matrix_block(count.min(entry_bytes / B));
    let mut piece = vec![0u8; count.saturating_mul(B).min(1 << 20)];
    let per_piece = (piece.len() / B).max(1);
    let mut left = count;
    while left > 0 {
        let take = left.min(per_piece);
        let bytes = &mut piece[..take * B];
        reader.read_exact(bytes)?;
        out.extend(
            bytes
                .chunks_exact(B)
                .map(|c| from(c.try_into().expect("B bytes a value"))),
        );
        left -= take;
    }
    Ok(out)
}

fn fortran_to_c(raw: &[f64], shape: &[usize]) -> Vec<f64> {
    let n = raw.len();
    let mut out = vec![0.0; n];
    crate::operator::advise_huge_pages(&out);
    let mut idx = vec![0usize; shape.len()];
    for o in out.iter_mut() {
        let mut f = 0;
        let mut stride = 1;
        for (d, &i) in idx.iter().enumerate() {
            f += i * stride;
            stride *= shape[d];
        }
        *o = raw[f];
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

fn expect_shape(path: &Path, name: &str, arr: &Array, want: &[usize], what: &str) -> Result<()> {
    if arr.shape != want {
        return Err(Error::npz(
            path,
            format!(
                "array `{name}` has shape {:?}, expected {want:?} ({what})",
                arr.shape
            ),
        ));
    }
    Ok(())
}

fn matrix_from_c(rows: usize, cols: usize, data: &[f64]) -> DMatrix<f64> {
    DMatrix::from_row_slice(rows, cols, data)
}

impl Problem {
    /// Load `x_star` (n1×n2) and `sensing` (m×n1×n2, `sensing[i, a, b]` = entry (a, b) of A_i);
    /// `y`, `u0`, `v0` are taken from the file when present and generated from `cfg` (its
    /// noise, width, α and seed) when not.
    pub fn load_npz(path: &Path, cfg: &ProblemSpec) -> Result<Self> {
        let file = std::fs::File::open(path)
            .map_err(|e| Error::npz(path, format!("cannot be opened: {e}")))?;
        Self::load_npz_from(std::io::BufReader::new(file), path, cfg)
    }

    /// [`Problem::load_npz`] from any seekable reader; `path` only labels errors.
    pub fn load_npz_from<R: std::io::Read + std::io::Seek>(
        reader: R,
        path: &Path,
        cfg: &ProblemSpec,
    ) -> Result<Self> {
        let mut archive = npyz::npz::NpzArchive::new(reader)
            .map_err(|e| Error::npz(path, format!("not a readable .npz archive: {e}")))?;
        // the zip index keeps one entry per name: more entries than names means two arrays
        // share a name, and which one would be read is the archive's accident
        let entries = archive.zip_archive().len();
        let distinct = archive.array_names().count();
        if entries > distinct {
            return Err(Error::npz(
                path,
                format!(
                    "holds {entries} entries under {distinct} names: two arrays share a name; \
                     keep one of each"
                ),
            ));
        }
        if let Some(unknown) = archive.array_names().find(|n| !ARRAYS.contains(n)) {
            return Err(Error::npz(
                path,
                format!(
                    "has an array `{unknown}` that gdflow does not read (it reads {}; names are \
                     case-sensitive): rename or remove it, so that nothing is silently ignored",
                    ARRAYS.join(", ")
                ),
            ));
        }
        // half the memory the system has free, for any one array (read once per file)
        let memory_limit = crate::resources::available_or_default() / 2;
        let shape_error = |name: &str, shape: &[usize], want: String| {
            Error::npz(
                path,
                format!("array `{name}` has shape {shape:?}, expected {want}"),
            )
        };
        let x = read_array(&mut archive, path, "x_star", memory_limit, &|s| {
            if s.len() == 2 && !s.contains(&0) {
                Ok(())
            } else {
                Err(shape_error(
                    "x_star",
                    s,
                    "a non-empty 2-d array n1×n2".into(),
                ))
            }
        })?
        .ok_or_else(|| Error::npz(path, "required array `x_star` (n1×n2) is missing"))?;
        if x.shape.len() != 2 || x.shape.contains(&0) {
            return Err(Error::npz(
                path,
                format!(
                    "array `x_star` must be a non-empty 2-d array n1×n2, found shape {:?}",
                    x.shape
                ),
            ));
        }
        let (n1, n2) = (x.shape[0], x.shape[1]);
        let s = read_array(&mut archive, path, "sensing", memory_limit, &|s| {
            if s.first().is_some_and(|&m| m > 0) && (s[1..] == [n1, n2] || s[1..] == [n1 * n2]) {
                Ok(())
            } else {
                Err(shape_error(
                    "sensing",
                    s,
                    format!(
                        "(m, {n1}, {n2}) or (m, {}) with m >= 1 (x_star is {n1}×{n2}; row i \
                         holds A_i, as `A.reshape(m, -1)` writes it)",
                        n1 * n2
                    ),
                ))
            }
        })?
        .ok_or_else(|| Error::npz(path, "required array `sensing` (m×n1×n2) is missing"))?;
        let m = s.shape[0];
        let n12 = n1 * n2;
        // C order holds A_i row-major; our columns hold vec(A_i) column-major. Transposed in
        // place, one A_i at a time, so that the matrix is held once, not twice, at the peak.
        let mut data = s.data;
        let mut tmp = vec![0.0; n12];
        for block in data.chunks_exact_mut(n12) {
            tmp.copy_from_slice(block);
            for a in 0..n1 {
                for b in 0..n2 {
                    block[a + b * n1] = tmp[a * n2 + b];
                }
            }
        }
        let cols = DMatrix::from_vec(n12, m, data);
        let x_star = matrix_from_c(n1, n2, &x.data);
        let op64 = DenseOperator::from_columns(n1, n2, cols);
        let (op, f32_change_of_y): (Arc<dyn SensingOperator>, _) = match cfg.precision {
            Precision::F64 => (Arc::new(op64), None),
            Precision::F32 => {
                let y64 = observe(&op64, &x_star, 0.0, 0);
                let op32 = op64.into_f32();
                let y32 = observe(&op32, &x_star, 0.0, 0);
                let diff: f64 = y64
                    .iter()
                    .zip(&y32)
                    .map(|(a, b)| (a - b).powi(2))
                    .sum::<f64>()
                    .sqrt();
                let norm: f64 = y64.iter().map(|a| a * a).sum::<f64>().sqrt();
                (Arc::new(op32), Some(diff / norm.max(f64::MIN_POSITIVE)))
            }
        };
        let target_sv = nonzero_singular_values(&x_star);
        let y_arr = read_array(&mut archive, path, "y", memory_limit, &|s| {
            // (m,) or the column (m, 1) a NumPy user gets from `A @ x`
            if s == [m] || s == [m, 1] {
                Ok(())
            } else {
                Err(shape_error(
                    "y",
                    s,
                    format!("({m},) or ({m}, 1), one value per measurement"),
                ))
            }
        })?;
        let has_y = y_arr.is_some();
        let y = match y_arr {
            Some(arr) => arr.data,
            None => observe(op.as_ref(), &x_star, cfg.noise, cfg.seed),
        };
        let factor = |name: &'static str, rows: usize| {
            move |s: &[usize]| {
                if s.len() == 2 && s[0] == rows {
                    Ok(())
                } else {
                    Err(shape_error(name, s, format!("[{rows}, k], a start factor")))
                }
            }
        };
        let u0 = read_array(&mut archive, path, "u0", memory_limit, &factor("u0", n1))?;
        let v0 = read_array(&mut archive, path, "v0", memory_limit, &factor("v0", n2))?;
        let (has_u0, has_v0) = (u0.is_some(), v0.is_some());
        let alpha = match read_array(&mut archive, path, "alpha", memory_limit, &|s| {
            if s.iter().product::<usize>() == 1 {
                Ok(())
            } else {
                Err(shape_error("alpha", s, "one number".into()))
            }
        })? {
            // one number, as NumPy writes a Python scalar (shape []) or as [α]
            Some(arr) => {
                if arr.data[0] <= 0.0 {
                    return Err(Error::npz(path, "array `alpha` must be > 0"));
                }
                Some(arr.data[0])
            }
            None => None,
        };
        let k = match (&u0, &v0) {
            (Some(a), _) | (None, Some(a)) if a.shape.len() == 2 => a.shape[1],
            (Some(a), _) | (None, Some(a)) => {
                return Err(Error::npz(
                    path,
                    format!("start factors must be 2-d, found shape {:?}", a.shape),
                ))
            }
            (None, None) => cfg.width,
        };
        if k == 0 {
            return Err(Error::npz(
                path,
                "start factors have zero columns (width k must be >= 1)",
            ));
        }
        let (gen_u, mut gen_v) = random_start(n1, n2, k, cfg.alpha, cfg.seed);
        if cfg.symmetric && n1 == n2 {
            gen_v = gen_u.clone();
        }
        let u0 = match u0 {
            Some(arr) => {
                expect_shape(path, "u0", &arr, &[n1, k], "n1×k")?;
                matrix_from_c(n1, k, &arr.data)
            }
            None => gen_u,
        };
        let v0 = match v0 {
            Some(arr) => {
                expect_shape(path, "v0", &arr, &[n2, k], "n2×k, k = columns of u0")?;
                matrix_from_c(n2, k, &arr.data)
            }
            None => gen_v,
        };
        if (has_u0 || has_v0) && u0.iter().chain(v0.iter()).all(|v| *v == 0.0) {
            return Err(Error::npz(
                path,
                "its start `u0`, `v0` is zero: the origin is a saddle that no dynamics leaves \
                 (give a small random start, or leave u0 and v0 out to draw one of scale --alpha)",
            ));
        }
        let mut problem = Self {
            op,
            x_star,
            target_sv,
            y,
            u0,
            v0,
            symmetric: false,
            f32_change_of_y,
            source: ProblemSource::File {
                path: path.to_path_buf(),
                has_y,
                has_u0,
                has_v0,
            },
            // a file's α describes its start; a generated start has the configured α
            start_alpha: match (has_u0, has_v0) {
                (false, false) => Some(cfg.alpha),
                _ => alpha,
            },
        };
        // the range --alpha is held to: below it α² underflows, and atol = rtol·α/√k with it
        let scale = problem.start_scale();
        if has_u0 && !(scale >= START_SCALE_MIN) {
            return Err(Error::npz(
                path,
                format!(
                    "its start `u0`, `v0` has scale α = {scale:e}, below {START_SCALE_MIN:e} (the \
                     least --alpha): the solver's absolute tolerance, rtol·α/√k, would underflow; \
                     scale the start up"
                ),
            ));
        }
        if cfg.symmetric {
            problem.make_symmetric(path)?;
        }
        Ok(problem)
    }

    /// Check that a loaded problem is the symmetric PSD case and mark it so.
    fn make_symmetric(&mut self, path: &Path) -> Result<()> {
        let n = self.n1();
        let asym = |m: &DMatrix<f64>| (m - m.transpose()).norm() / m.norm().max(f64::MIN_POSITIVE);
        if self.n2() != n {
            return Err(Error::npz(path, "--symmetric needs a square `x_star`"));
        }
        if asym(&self.x_star) > 1e-12 {
            return Err(Error::npz(path, "--symmetric needs a symmetric `x_star`"));
        }
        let mut a = vec![0.0; n * n];
        for i in 0..self.m() {
            self.op.measurement_matrix(i, &mut a);
            if asym(&DMatrix::from_column_slice(n, n, &a)) > 1e-12 {
                return Err(Error::npz(
                    path,
                    format!("--symmetric needs symmetric matrices: `sensing[{i}]` is not"),
                ));
            }
        }
        if self.u0 != self.v0 {
            return Err(Error::npz(
                path,
                "--symmetric needs `v0` equal to `u0` (or neither given)",
            ));
        }
        self.symmetric = true;
        Ok(())
    }

    /// Write the instance in the format [`Problem::load_npz`] reads (all arrays float64, C
    /// order). The file appears only once complete.
    pub fn save_npz(&self, path: &Path) -> Result<()> {
        let arrays = self.npz_arrays();
        crate::output::write_atomically(path, |file| {
            write_npz(std::io::BufWriter::new(file), &arrays)
        })
    }

    /// The arrays of a problem file: name, shape, values in C order.
    fn npz_arrays(&self) -> Vec<(&'static str, Vec<u64>, Vec<f64>)> {
        let (n1, n2, m) = (self.n1(), self.n2(), self.m());
        let dense = self.op.to_dense();
        let mut sensing = Vec::with_capacity(m * n1 * n2);
        for i in 0..m {
            let col = dense.column(i);
            for a in 0..n1 {
                for b in 0..n2 {
                    sensing.push(col[a + b * n1]);
                }
            }
        }
        let c_order = |mat: &DMatrix<f64>| -> Vec<f64> { mat.transpose().as_slice().to_vec() };
        let mut arrays: Vec<(&str, Vec<u64>, Vec<f64>)> = vec![
            ("x_star", vec![n1 as u64, n2 as u64], c_order(&self.x_star)),
            ("sensing", vec![m as u64, n1 as u64, n2 as u64], sensing),
            ("y", vec![m as u64], self.y.clone()),
            (
                "u0",
                vec![n1 as u64, self.width() as u64],
                c_order(&self.u0),
            ),
            (
                "v0",
                vec![n2 as u64, self.width() as u64],
                c_order(&self.v0),
            ),
        ];
        if let Some(a) = self.start_alpha {
            arrays.push(("alpha", vec![1], vec![a]));
        }
        arrays
    }

    /// The bytes [`Problem::save_npz`] writes, in memory.
    pub fn to_npz_bytes(&self) -> Result<Vec<u8>> {
        let mut out = std::io::Cursor::new(Vec::new());
        write_npz(&mut out, &self.npz_arrays())
            .map_err(|e| Error::npz(Path::new("<memory>"), e.to_string()))?;
        Ok(out.into_inner())
    }
}

/// Named float64 arrays (shape, values in C order) into an `.npz` archive, stored, not
/// deflated, as `np.savez` writes: random floats do not compress, and inflating them made
/// loading a problem slower than solving it.
pub fn write_npz<W: std::io::Write + std::io::Seek>(
    writer: W,
    arrays: &[(impl AsRef<str>, Vec<u64>, Vec<f64>)],
) -> std::io::Result<()> {
    use npyz::WriterBuilder;
    let mut npz = npyz::npz::NpzWriter::new(writer);
    for (name, shape, data) in arrays {
        let stored =
            zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
        let mut w = npz
            .array::<f64>(name.as_ref(), stored)?
            .default_dtype()
            .shape(shape)
            .begin_nd()?;
        w.extend(data.iter().copied())?;
        w.finish()?;
    }
    npz.zip_writer().finish()?;
    Ok(())
}
