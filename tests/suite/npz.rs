//! NumPy interop: round trip, the orientation of A_i, and clear errors.

use std::path::Path;

use gdflow::config::Config;
use gdflow::problem::Problem;
use npyz::WriterBuilder;

use super::small_gaussian;

/// Write float64 arrays (name, shape, C-order data) as an `.npz`.
pub fn write_npz(path: &Path, arrays: &[(&str, Vec<u64>, Vec<f64>)]) {
    write_npz_as(path, arrays, "<f8", false);
}

#[test]
fn save_then_load_is_identical() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.npz");
    let p = small_gaussian(31);
    p.save_npz(&path).unwrap();
    let q = Problem::load_npz(&path, &Config::default().problem_spec()).unwrap();
    assert_eq!(p.x_star, q.x_star);
    assert_eq!(p.op.to_dense(), q.op.to_dense());
    assert_eq!(p.y, q.y);
    assert_eq!(p.u0, q.u0);
    assert_eq!(p.v0, q.v0);
}

/// A_0 = [[1,2,3],[4,5,6]], A_1 = e_0 e_2ᵀ, X* = [[1,0,7],[0,0,2]] (2×3):
/// ⟨A_0, X*⟩ = 1 + 21 + 12 = 34 and ⟨A_1, X*⟩ = 7. Reading A_i transposed gives other numbers.
#[test]
fn hand_written_non_square_problem_gives_the_expected_measurements() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hand.npz");
    let sensing = vec![1., 2., 3., 4., 5., 6., 0., 0., 1., 0., 0., 0.];
    write_npz(
        &path,
        &[
            ("x_star", vec![2, 3], vec![1., 0., 7., 0., 0., 2.]),
            ("sensing", vec![2, 2, 3], sensing),
        ],
    );
    let cfg = Config::default();
    let p = Problem::load_npz(&path, &cfg.problem_spec()).unwrap();
    assert_eq!((p.n1(), p.n2(), p.m()), (2, 3, 2));
    assert_eq!(p.y, vec![34.0, 7.0]);
    assert_eq!(p.x_star[(0, 2)], 7.0);
    // missing u0, v0 are generated from the config: width k, scale α
    assert_eq!(p.u0.shape(), (2, cfg.width));
    assert_eq!(p.v0.shape(), (3, cfg.width));
}

fn load_err(arrays: &[(&str, Vec<u64>, Vec<f64>)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.npz");
    write_npz(&path, arrays);
    match Problem::load_npz(&path, &Config::default().problem_spec()) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_files_are_clear_errors() {
    let x = ("x_star", vec![2, 3], vec![1., 0., 0., 0., 1., 0.]);
    let s = ("sensing", vec![1, 2, 3], vec![1.; 6]);
    let e = load_err(std::slice::from_ref(&s));
    assert!(e.contains("x_star") && e.contains("missing"), "{e}");
    let e = load_err(std::slice::from_ref(&x));
    assert!(e.contains("sensing") && e.contains("missing"), "{e}");
    let e = load_err(&[x.clone(), ("sensing", vec![1, 3, 2], vec![1.; 6])]);
    assert!(e.contains("sensing") && e.contains("shape"), "{e}");
    let e = load_err(&[x.clone(), s.clone(), ("y", vec![2], vec![1., 2.])]);
    assert!(e.contains("`y`") && e.contains("shape"), "{e}");
    let e = load_err(&[x.clone(), s.clone(), ("u0", vec![3, 2], vec![0.1; 6])]);
    assert!(e.contains("u0"), "{e}");
    let e = load_err(&[
        ("x_star", vec![2, 3], vec![1., f64::NAN, 0., 0., 1., 0.]),
        s.clone(),
    ]);
    assert!(e.contains("x_star") && e.contains("non-finite"), "{e}");
    let e = load_err(&[
        x.clone(),
        (
            "sensing",
            vec![1, 2, 3],
            vec![1., 1., f64::INFINITY, 1., 1., 1.],
        ),
    ]);
    assert!(e.contains("sensing") && e.contains("non-finite"), "{e}");
}

#[test]
fn integer_arrays_are_refused_with_their_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("int.npz");
    let mut npz = npyz::npz::NpzWriter::create(&path).unwrap();
    let mut w = npz
        .array::<i64>("x_star", Default::default())
        .unwrap()
        .default_dtype()
        .shape(&[2, 2])
        .begin_nd()
        .unwrap();
    w.extend([1i64, 0, 0, 1]).unwrap();
    w.finish().unwrap();
    npz.zip_writer().finish().unwrap();
    let e = Problem::load_npz(&path, &Config::default().problem_spec())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("x_star") && e.contains("float64"), "{e}");
}

/// Write arrays (name, shape, C-order data) at one dtype (`<f8`, `>f8`, `<f4`, `>f4`), C or
/// Fortran order.
fn write_npz_as(path: &Path, arrays: &[(&str, Vec<u64>, Vec<f64>)], dtype: &str, fortran: bool) {
    let dtype = npyz::DType::Plain(dtype.parse::<npyz::TypeStr>().unwrap());
    let single = dtype.descr().contains("f4");
    let order = if fortran {
        npyz::Order::Fortran
    } else {
        npyz::Order::C
    };
    let mut npz = npyz::npz::NpzWriter::create(path).unwrap();
    for (name, shape, data) in arrays {
        // Fortran order stores the transpose's C order: index (i, j, …) at i + n_i·(j + …)
        let stored: Vec<f64> = if fortran {
            let strides: Vec<usize> = (0..shape.len())
                .map(|d| shape[d + 1..].iter().product::<u64>() as usize)
                .collect();
            let mut idx = vec![0usize; shape.len()];
            (0..data.len())
                .map(|_| {
                    let c: usize = idx.iter().zip(&strides).map(|(i, s)| i * s).sum();
                    for (d, i) in idx.iter_mut().enumerate() {
                        *i += 1;
                        if *i < shape[d] as usize {
                            break;
                        }
                        *i = 0;
                    }
                    data[c]
                })
                .collect()
        } else {
            data.clone()
        };
        fn put<T: npyz::Serialize, W: std::io::Write + std::io::Seek>(
            npz: &mut npyz::npz::NpzWriter<W>,
            (name, dtype, shape, order): (&str, &npyz::DType, &[u64], npyz::Order),
            values: impl Iterator<Item = T>,
        ) {
            let mut w = npz
                .array::<T>(name, Default::default())
                .unwrap()
                .dtype(dtype.clone())
                .shape(shape)
                .order(order)
                .begin_nd()
                .unwrap();
            w.extend(values).unwrap();
            w.finish().unwrap();
        }
        let how = (*name, &dtype, &shape[..], order);
        if single {
            put(&mut npz, how, stored.iter().map(|&v| v as f32));
        } else {
            put(&mut npz, how, stored.iter().copied());
        }
    }
    npz.zip_writer().finish().unwrap();
}

/// Little-endian float64 and float32 are read in bulk, any other byte order through npyz:
/// every encoding NumPy may write holds the same values (all exact in f32 here), so every one
/// loads to the same problem, and to the values written.
#[test]
fn every_float_encoding_loads_the_same_problem() {
    let dir = tempfile::tempdir().unwrap();
    // values exact in f32, a sensing matrix large enough to be read in several pieces
    let (n1, n2, m) = (3usize, 4usize, 30_000usize);
    let value = |i: usize| ((i * 7919) % 1021) as f64 / 64.0 - 8.0;
    let x: Vec<f64> = (0..n1 * n2).map(|i| value(i + 5)).collect();
    let sensing: Vec<f64> = (0..m * n1 * n2).map(value).collect();
    let u0: Vec<f64> = (0..n1 * 2).map(|i| (i as f64 + 1.0) / 256.0).collect();
    let v0: Vec<f64> = (0..n2 * 2).map(|i| (i as f64 + 2.0) / 512.0).collect();
    let arrays = [
        ("x_star", vec![n1 as u64, n2 as u64], x.clone()),
        (
            "sensing",
            vec![m as u64, n1 as u64, n2 as u64],
            sensing.clone(),
        ),
        ("u0", vec![n1 as u64, 2], u0.clone()),
        ("v0", vec![n2 as u64, 2], v0),
    ];
    let spec = Config::default().problem_spec();
    let mut loaded = Vec::new();
    for dtype in ["<f8", ">f8", "<f4", ">f4"] {
        for fortran in [false, true] {
            let path = dir.path().join(format!("p{}{fortran}.npz", &dtype[1..]));
            write_npz_as(&path, &arrays, dtype, fortran);
            let p = Problem::load_npz(&path, &spec)
                .unwrap_or_else(|e| panic!("{dtype}, fortran {fortran}: {e}"));
            loaded.push((dtype, fortran, p));
        }
    }
    let (_, _, first) = &loaded[0];
    // the values written: X* row-major, A_0 = the first n1·n2 values row-major, y = 𝒜(X*)
    assert_eq!(first.x_star[(1, 2)], x[n2 + 2]);
    let mut a0 = vec![0.0; n1 * n2];
    first.op.measurement_matrix(0, &mut a0);
    let a0_entry = |a: usize, b: usize| a0[a + b * n1];
    assert_eq!(a0_entry(2, 1), sensing[2 * n2 + 1]);
    let y0: f64 = (0..n1 * n2).map(|i| sensing[i] * x[i]).sum();
    assert!((first.y[0] - y0).abs() <= 1e-12 * y0.abs().max(1.0));
    assert_eq!(first.u0[(2, 1)], u0[2 * 2 + 1]);
    for (dtype, fortran, p) in &loaded[1..] {
        let what = format!("{dtype}, fortran {fortran}");
        assert_eq!(p.x_star, first.x_star, "{what}");
        assert_eq!(p.op.to_dense(), first.op.to_dense(), "{what}");
        assert_eq!(p.y, first.y, "{what}");
        assert_eq!((&p.u0, &p.v0), (&first.u0, &first.v0), "{what}");
    }
}
