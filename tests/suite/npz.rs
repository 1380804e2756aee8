//! NumPy interop: round trip, the orientation of A_i, and clear errors.

use std::path::Path;

use gdflow::config::Config;
use gdflow::problem::Problem;
use npyz::WriterBuilder;

use super::small_gaussian;

/// Write float64 arrays (name, shape, C-order data) as an `.npz`.
pub fn write_npz(path: &Path, arrays: &[(&str, Vec<u64>, Vec<f64>)]) {
    let mut npz = npyz::npz::NpzWriter::create(path).unwrap();
    for (name, shape, data) in arrays {
        let mut w = npz
            .array::<f64>(name, Default::default())
            .unwrap()
            .default_dtype()
            .shape(shape)
            .begin_nd()
            .unwrap();
        w.extend(data.iter().copied()).unwrap();
        w.finish().unwrap();
    }
    npz.zip_writer().finish().unwrap();
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
