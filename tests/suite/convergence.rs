//! From a small start, an overparameterised Gaussian problem with enough measurements is
//! solved by GD and by the flow.

use gdflow::config::ConfigArgs;
use gdflow::dynamics::Status;
use gdflow::experiments;

#[test]
fn gd_and_flow_reach_small_relative_error() {
    let args = ConfigArgs {
        n1: Some(12),
        n2: Some(10),
        rank: Some(2),
        width: Some(4), // k > r
        measurements: Some(240),
        singular_values: Some(vec![1.0, 0.8]),
        alpha: Some(1e-7), // the spurious part left by k > r scales with α
        eta: Some(0.1),
        steps: Some(2000),
        record_every: Some(100),
        seed: Some(5),
        ..Default::default()
    };
    let result = experiments::run_config(&args).unwrap();
    let s = &result.summary;
    assert_eq!(s.gd.status, Status::Completed);
    assert_eq!(s.flow.status, Status::Completed);
    assert!(s.gd.final_rel_error < 1e-6, "GD: {}", s.gd.final_rel_error);
    assert!(
        s.flow.final_rel_error < 1e-6,
        "flow: {}",
        s.flow.final_rel_error
    );
    // and they started far from it
    assert!(result.gd[0].rel_error() > 0.99);
}
