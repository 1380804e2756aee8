use gdflow::config::{ConfigArgs, Method};
use gdflow::problem::Problem;

#[test]
fn flags_win_over_the_config_file() {
    let file = ConfigArgs::from_toml("n1 = 11\neta = 0.2\nmethod = \"bdf\"\n").unwrap();
    let flags = ConfigArgs {
        eta: Some(0.01),
        ..Default::default()
    };
    let cfg = file.overlaid_by(&flags).resolve().unwrap();
    assert_eq!(cfg.n1, 11);
    assert_eq!(cfg.eta, 0.01);
    assert_eq!(cfg.method, Method::Bdf);
}

#[test]
fn unknown_keys_are_errors_with_a_suggestion() {
    let e = ConfigArgs::from_toml("n1 = 3\nmeasurments = 40\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("measurments") && e.contains("did you mean `measurements`"),
        "{e}"
    );
}

#[test]
fn resolved_config_round_trips_through_toml() {
    let cfg = ConfigArgs {
        kappa: Some(5.0),
        rtol: Some(1e-9),
        ..Default::default()
    }
    .resolve()
    .unwrap();
    // as config.toml holds it (the writer leaves out what no setting of this run uses)
    let text = toml::to_string(&cfg.table_without(&[]).unwrap()).unwrap();
    let again = ConfigArgs::from_toml(&text).unwrap().resolve().unwrap();
    assert_eq!(cfg, again);
}

#[test]
fn singular_value_profiles_span_one_to_one_over_kappa() {
    for profile in ["geometric", "linear"] {
        let args =
            ConfigArgs::from_toml(&format!("rank = 4\nkappa = 8\nprofile = \"{profile}\"\n"))
                .unwrap();
        let sv = args.resolve().unwrap().target_singular_values();
        assert_eq!(sv.len(), 4);
        assert!(
            (sv[0] - 1.0).abs() < 1e-15 && (sv[3] - 0.125).abs() < 1e-15,
            "{sv:?}"
        );
        // and the generated target has exactly that spectrum
        let p = Problem::generate(&args.resolve().unwrap().problem_spec()).unwrap();
        for (a, b) in p.target_sv.iter().zip(&sv) {
            assert!((a - b).abs() < 1e-12);
        }
    }
}

#[test]
fn same_inputs_give_bit_identical_problems_and_sub_seeds_are_independent() {
    let base = ConfigArgs::default().resolve().unwrap();
    let a = Problem::generate(&base.problem_spec()).unwrap();
    let b = Problem::generate(&base.problem_spec()).unwrap();
    assert_eq!(a.op.to_dense(), b.op.to_dense());
    assert_eq!((&a.x_star, &a.y, &a.u0), (&b.x_star, &b.y, &b.u0));
    // changing α redraws nothing but the start's scale
    let mut other = base.clone();
    other.alpha = 2.0 * base.alpha;
    let c = Problem::generate(&other.problem_spec()).unwrap();
    assert_eq!(a.op.to_dense(), c.op.to_dense());
    assert_eq!(a.x_star, c.x_star);
    assert_eq!(&a.u0 * 2.0, c.u0);
    // a different seed changes everything
    let mut seeded = base.clone();
    seeded.seed = 1;
    let d = Problem::generate(&seeded.problem_spec()).unwrap();
    assert_ne!(a.x_star, d.x_star);
}

#[test]
fn invalid_values_name_the_field() {
    for (toml, field) in [
        ("alpha = -1.0", "alpha"),
        ("rank = 40", "rank"),
        ("n1 = 0", "n1"),
        ("kappa = 0.5", "kappa"),
        ("eta = 0.0", "eta"),
        ("rtol = 0.0", "rtol"),
        ("singular_values = [1.0, 2.0]", "singular_values"),
        ("operator = \"identity\"\nmeasurements = 10", "measurements"),
    ] {
        let e = ConfigArgs::from_toml(toml)
            .unwrap()
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("`{field}`")), "{toml}: {e}");
    }
}

/// The defaults the help states ("[default: 30]") are the ones `resolve()` applies. Both sit on
/// the key's field, but apart (the help in its doc comment, which clap reads and a generated
/// `#[doc]` cannot feed, clap-rs/clap#2639; the default after its type), so this ties them: a
/// default changed in one place only fails here.
#[test]
fn stated_defaults_are_the_applied_ones() {
    use clap::Args;
    let cmd = ConfigArgs::augment_args(clap::Command::new("run"));
    // a relative perturbation, so that its size (sized only then) is resolved too
    let resolved = ConfigArgs::from_toml("perturbation = \"relative\"")
        .and_then(|a| a.resolve())
        .and_then(|c| c.table_without(&[]))
        .unwrap();
    let mut checked = 0;
    for arg in cmd.get_arguments() {
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        let Some(start) = help.find("[default: ") else {
            continue;
        };
        let stated = help[start + "[default: ".len()..]
            .split(']')
            .next()
            .unwrap();
        // defaults computed from other keys ("2·rank", "1 with --flow central, 0 otherwise")
        // are said in words
        if stated.contains([' ', '·', ';', ',']) {
            continue;
        }
        let key = arg.get_id().as_str();
        let Some(value) = resolved.get(key) else {
            // left out of config.toml at its default (replicas = 1): the stated value, given,
            // must be left out too
            let literal = if stated.parse::<f64>().is_ok() || stated.parse::<bool>().is_ok() {
                stated.to_string()
            } else {
                format!("{stated:?}")
            };
            let given = ConfigArgs::from_toml(&format!("{key} = {literal}"))
                .and_then(|a| a.resolve())
                .and_then(|c| c.table_without(&[]))
                .unwrap();
            assert!(
                given.get(key).is_none(),
                "--{key}: the help says [default: {stated}], which is not what resolve() applies"
            );
            checked += 1;
            continue;
        };
        let same = match value {
            toml::Value::Integer(i) => stated.parse::<i64>().ok() == Some(*i),
            toml::Value::Float(f) => stated.parse::<f64>().ok() == Some(*f),
            toml::Value::String(s) => s == stated,
            toml::Value::Boolean(b) => stated.parse::<bool>().ok() == Some(*b),
            _ => false,
        };
        assert!(
            same,
            "--{key}: the help says [default: {stated}], resolve() gives {value}"
        );
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} stated defaults checked");
}

/// The same for `gdflow check`'s constants: the help's "[default: …]" is what
/// `CheckSettings::resolve` applies.
#[test]
fn stated_check_defaults_are_the_applied_ones() {
    use clap::Args;
    let cmd = gdflow::config::CheckArgs::augment_args(clap::Command::new("check"));
    let resolved = gdflow::results::check::CheckSettings::resolve(&Default::default()).unwrap();
    let resolved = serde_json::to_value(&resolved).unwrap();
    let mut checked = 0;
    for arg in cmd.get_arguments() {
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        let Some(start) = help.find("[default: ") else {
            continue;
        };
        let stated: f64 = help[start + "[default: ".len()..]
            .split(']')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let key = arg.get_id().as_str();
        let applied = resolved[key].as_f64().unwrap_or(f64::NAN);
        assert_eq!(
            applied, stated,
            "--{key}: the help says [default: {stated}]"
        );
        checked += 1;
    }
    assert_eq!(checked, 9, "every constant with a default");
}

/// The spectral columns' default cadence gives 100 to 200 spectral rows per dynamics (records
/// ÷ 100 rounded down, at least 1: every record below 100); a value given wins; `gdflow check`, which reads ρ's maximum and the
/// phases from every record, and `gdflow sweep`, which has no spectral columns, resolve it to
/// every record whatever the steps.
#[test]
fn spectral_columns_default_to_about_a_hundred_rows_per_dynamics() {
    use gdflow::experiments::{Command, Setup};
    let every = |steps: usize, record_every: usize, given: Option<usize>| {
        ConfigArgs {
            steps: Some(steps),
            record_every: Some(record_every),
            spectrum_every: given,
            ..Default::default()
        }
        .resolve()
        .unwrap()
        .spectrum_every
    };
    for (steps, record_every) in [(1000, 1), (50, 1), (99, 1), (100, 1), (250, 1), (5000, 7)] {
        let records = steps / record_every;
        let expected = (records / 100).max(1);
        assert_eq!(
            every(steps, record_every, None),
            expected,
            "{steps} steps / {record_every}"
        );
        let spectral_rows = records.div_ceil(expected);
        assert!(
            (100..200).contains(&spectral_rows) || (records < 100 && expected == 1),
            "{spectral_rows} rows"
        );
        assert_eq!(every(steps, record_every, Some(1)), 1, "given");
    }
    let args = ConfigArgs {
        n1: Some(6),
        n2: Some(5),
        rank: Some(1),
        measurements: Some(40),
        steps: Some(3000),
        ..Default::default()
    };
    assert_eq!(args.resolve().unwrap().spectrum_every, 30);
    let check = Setup::new(&args, Command::Check, false).unwrap();
    assert_eq!(check.config.spectrum_every, 1, "check");
    // a sweep takes no --steps: its default 1000 would give 10
    let args = ConfigArgs {
        steps: None,
        ..args
    };
    assert_eq!(args.resolve().unwrap().spectrum_every, 10);
    let sweep = Setup::new(&args, Command::Sweep, false).unwrap();
    assert_eq!(sweep.config.spectrum_every, 1, "sweep");
}
