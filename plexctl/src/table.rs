//! A tiny aligned-column table for human output: a header row, then one row per item, columns
//! separated by two spaces, text left-aligned and numbers right-aligned.

/// How a column's cells are padded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Pad on the right (text).
    Left,
    /// Pad on the left (numbers).
    Right,
}

/// A table being built row by row.
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<String>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

/// The gap between two columns.
const GAP: &str = "  ";

impl Table {
    /// A table with these column headers, all left-aligned.
    pub fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            align: vec![Align::Left; headers.len()],
            rows: Vec::new(),
        }
    }

    /// Right-aligns the given columns (by index; indexes past the last column are ignored).
    pub fn right(mut self, columns: &[usize]) -> Self {
        for &c in columns {
            if let Some(a) = self.align.get_mut(c) {
                *a = Align::Right;
            }
        }
        self
    }

    /// Appends a row. Missing cells are shown empty; cells past the last column are dropped.
    pub fn row(&mut self, mut cells: Vec<String>) {
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// Renders the header and rows, one line each, every line ending in `\n` and without
    /// trailing spaces.
    pub fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }

        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str(GAP);
                }
                // `{:<w$}` pads by characters, not bytes, so `µ` counts as one column.
                let w = widths[i];
                match self.align[i] {
                    Align::Left => line.push_str(&format!("{cell:<w$}")),
                    Align::Right => line.push_str(&format!("{cell:>w$}")),
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn columns_align_to_widest_cell() {
        let mut t = Table::new(&["NAME", "BLOCKS", "UUID"]).right(&[1]);
        t.row(cells(&["Malloc0", "131072", "abc"]));
        t.row(cells(&["n", "8", "d"]));
        assert_eq!(
            t.render(),
            "NAME     BLOCKS  UUID\n\
             Malloc0  131072  abc\n\
             n             8  d\n"
        );
    }

    #[test]
    fn header_wider_than_cells() {
        let mut t = Table::new(&["A", "LONG_HEADER"]).right(&[1]);
        t.row(cells(&["xyz", "1"]));
        assert_eq!(t.render(), "A    LONG_HEADER\nxyz            1\n");
    }

    #[test]
    fn no_trailing_spaces_and_short_rows_padded() {
        let mut t = Table::new(&["NAME", "NOTE"]);
        t.row(cells(&["averylongname"]));
        t.row(cells(&["a", "b", "ignored"]));
        let out = t.render();
        assert!(out.lines().all(|l| !l.ends_with(' ')));
        assert_eq!(
            out,
            "NAME           NOTE\naverylongname\na              b\n"
        );
    }

    #[test]
    fn multibyte_cells_count_as_one_column_each() {
        let mut t = Table::new(&["LAT(µs)", "X"]).right(&[0]);
        t.row(cells(&["1.5", "y"]));
        assert_eq!(t.render(), "LAT(µs)  X\n    1.5  y\n");
    }

    #[test]
    fn empty_table_is_just_the_header() {
        let t = Table::new(&["NAME", "SIZE"]).right(&[7]);
        assert_eq!(t.render(), "NAME  SIZE\n");
    }
}
