//! Tables of named columns: the one CSV writer and reader every row-per-record output uses
//! (trajectory.csv today). Cells are text, numbers or empty; a reader asks for columns by
//! name, never by position, so a new column is read by whoever knows its name and ignored by
//! everyone else.

use std::path::Path;

use crate::error::Result;
use crate::output::num;

use super::{csv_bytes, csv_error, not_ours};

/// One cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    /// Written with Rust's shortest round-trip form (`0.1`, `1e-8`, `NaN`).
    Num(f64),
    /// Written without a decimal point.
    Int(u64),
    Empty,
}

impl Cell {
    fn text(&self) -> String {
        match self {
            Cell::Text(s) => s.clone(),
            Cell::Num(v) => num(*v),
            Cell::Int(v) => v.to_string(),
            Cell::Empty => String::new(),
        }
    }
}

impl From<Option<f64>> for Cell {
    fn from(v: Option<f64>) -> Self {
        v.map_or(Cell::Empty, Cell::Num)
    }
}

/// A header and rows of cells, as written to or read from CSV.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    /// The CSV bytes (`what` names the file in errors).
    pub fn to_csv(&self, what: &str) -> Result<Vec<u8>> {
        let mut w = csv::Writer::from_writer(Vec::new());
        let err = csv_error(what);
        w.write_record(&self.columns).map_err(&err)?;
        for row in &self.rows {
            w.write_record(row.iter().map(Cell::text)).map_err(&err)?;
        }
        csv_bytes(what, w)
    }

    /// The table in CSV `bytes` read from `path`, every cell as text.
    pub fn from_csv(bytes: &[u8], path: &Path) -> Result<RawTable> {
        let mut reader = csv::Reader::from_reader(bytes);
        let columns: Vec<String> = reader
            .headers()
            .map_err(|e| not_ours(path, e))?
            .iter()
            .map(String::from)
            .collect();
        let mut rows = Vec::new();
        for row in reader.records() {
            let row = row.map_err(|e| not_ours(path, e))?;
            if row.len() != columns.len() {
                return Err(not_ours(
                    path,
                    format!(
                        "a row of {} cells under {} columns",
                        row.len(),
                        columns.len()
                    ),
                ));
            }
            rows.push(row.iter().map(String::from).collect());
        }
        Ok(RawTable {
            path: path.to_path_buf(),
            columns,
            rows,
        })
    }
}

/// A table as read: text cells, parsed by column name on demand, errors naming the file.
#[derive(Debug, Clone)]
pub struct RawTable {
    path: std::path::PathBuf,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl RawTable {
    /// The index of column `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// The index of column `name`, or an error naming the file and the column.
    pub fn require(&self, name: &str) -> Result<usize> {
        self.column(name)
            .ok_or_else(|| not_ours(&self.path, format!("no column `{name}`")))
    }

    /// Cell `col` of row `row` as a number, `None` when empty.
    pub fn number(&self, row: usize, col: usize) -> Result<Option<f64>> {
        match self.rows[row][col].as_str() {
            "" => Ok(None),
            c => c
                .parse::<f64>()
                .map(Some)
                .map_err(|e| not_ours(&self.path, format!("column `{}`: {e}", self.columns[col]))),
        }
    }

    /// Cell `col` of row `row` as text.
    pub fn text(&self, row: usize, col: usize) -> &str {
        &self.rows[row][col]
    }

    /// Cell `col` of row `row` as a number that must be there.
    pub fn required(&self, row: usize, col: usize) -> Result<f64> {
        self.number(row, col)?
            .ok_or_else(|| self.error(format!("an empty `{}`", self.columns[col])))
    }

    /// Cell `col` of row `row` as a count (a non-negative integer).
    pub fn count(&self, row: usize, col: usize) -> Result<usize> {
        self.text(row, col)
            .parse::<usize>()
            .map_err(|e| self.error(format!("column `{}`: {e}", self.columns[col])))
    }

    /// An error about this file.
    pub fn error(&self, why: impl std::fmt::Display) -> crate::error::Error {
        not_ours(&self.path, why)
    }
}
