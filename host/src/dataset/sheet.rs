//! Annotation sheets: spreadsheets (.xlsx, .xlsm, .xls, .ods, read with calamine) and CSV files,
//! as rows of cells under a located header row.
//!
//! Coding sheets are not clean tables: SAMM's starts with a dozen description rows, CASME II's has
//! blank columns, and column names vary in spacing and case between releases ("Onset Frame",
//! "OnsetFrame"). So the header row is found by content (the first row holding every required
//! column), names are compared ignoring case, spaces and punctuation, and every row keeps the
//! 1-based number a spreadsheet program shows, for error messages.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use calamine::{Data, Reader, open_workbook_auto};

/// How far down a sheet the header row may be.
const HEADER_SEARCH_ROWS: usize = 50;

/// One cell value.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Cell {
    Empty,
    Text(String),
    Number(f64),
}

impl Cell {
    /// The value as written: trimmed text, or a number without a spurious ".0".
    pub(super) fn text(&self) -> String {
        match self {
            Cell::Empty => String::new(),
            Cell::Text(s) => s.trim().to_string(),
            Cell::Number(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{}", *v as i64),
            Cell::Number(v) => v.to_string(),
        }
    }

    pub(super) fn is_blank(&self) -> bool {
        self.text().is_empty()
    }

    /// A whole number, whether stored as a number or as text ("46", "46.0").
    pub(super) fn integer(&self) -> Option<i64> {
        let v = match self {
            Cell::Empty => return None,
            Cell::Number(v) => *v,
            Cell::Text(s) => {
                let s = s.trim();
                if let Ok(i) = s.parse::<i64>() {
                    return Some(i);
                }
                s.parse::<f64>().ok()?
            }
        };
        (v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15).then_some(v as i64)
    }
}

/// A column a loader needs: accepted names, the first one being how messages call it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Column(pub &'static [&'static str]);

impl Column {
    fn name(self) -> &'static str {
        self.0[0]
    }

    fn matches(self, header: &str) -> bool {
        let header = normalise(header);
        !header.is_empty() && self.0.iter().any(|alias| normalise(alias) == header)
    }
}

/// One data row.
#[derive(Debug, Clone)]
pub(super) struct SheetRow {
    /// 1-based row number as a spreadsheet program (or a text editor, for CSV) shows it.
    pub number: usize,
    cells: Vec<Cell>,
}

impl SheetRow {
    pub(super) fn cell(&self, index: usize) -> &Cell {
        self.cells.get(index).unwrap_or(&Cell::Empty)
    }
}

/// A sheet's data rows below its header row.
#[derive(Debug, Clone)]
pub(super) struct Sheet {
    pub path: PathBuf,
    pub header_row: usize,
    headers: Vec<String>,
    pub rows: Vec<SheetRow>,
}

impl Sheet {
    /// Reads the first worksheet that has a header row holding all `required` columns.
    pub(super) fn read(path: &Path, required: &[Column]) -> Result<Sheet> {
        let tables = read_tables(path)?;
        let mut best: Option<(usize, &str, usize, &[Cell])> = None;
        for (name, rows) in &tables {
            for (number, cells) in rows.iter().take(HEADER_SEARCH_ROWS) {
                let found = required.iter().filter(|c| cells.iter().any(|h| c.matches(&h.text()))).count();
                if found == required.len() {
                    let header_row = *number;
                    let headers: Vec<String> = cells.iter().map(Cell::text).collect();
                    let rows = rows
                        .iter()
                        .filter(|(n, cells)| *n > header_row && cells.iter().any(|c| !c.is_blank()))
                        .map(|(n, cells)| SheetRow { number: *n, cells: cells.clone() })
                        .collect();
                    return Ok(Sheet { path: path.to_path_buf(), header_row, headers, rows });
                }
                if best.is_none_or(|(f, ..)| found > f) {
                    best = Some((found, name.as_deref().unwrap_or(""), *number, cells));
                }
            }
        }
        let (found_row, sheet_name, cells) = match best {
            Some((_, name, number, cells)) => (number, name, cells),
            None => bail!("{}: the sheet is empty", path.display()),
        };
        let missing: Vec<String> = required.iter().filter(|c| !cells.iter().any(|h| c.matches(&h.text()))).map(|c| describe(*c)).collect();
        let found: Vec<String> = cells.iter().map(Cell::text).filter(|t| !t.is_empty()).collect();
        let place = if sheet_name.is_empty() { String::new() } else { format!(" of worksheet {sheet_name:?}") };
        bail!(
            "{}: missing column {}; the closest header row is row {found_row}{place}, with columns: {}",
            path.display(),
            missing.join(", "),
            found.join(", ")
        )
    }

    /// Index of `column`, or an error naming it and the columns the header row has.
    pub(super) fn column(&self, column: Column) -> Result<usize> {
        self.optional_column(column).ok_or_else(|| {
            let found: Vec<&str> = self.headers.iter().map(String::as_str).filter(|h| !h.is_empty()).collect();
            anyhow!(
                "{}: missing column {}; columns in header row {}: {}",
                self.path.display(),
                describe(column),
                self.header_row,
                found.join(", ")
            )
        })
    }

    pub(super) fn optional_column(&self, column: Column) -> Option<usize> {
        self.headers.iter().position(|h| column.matches(h))
    }

    /// The file name, for `source` strings.
    pub(super) fn file_name(&self) -> String {
        self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }

    /// "CASME2-coding-20140508.xlsx row 14": where a sample came from.
    pub(super) fn source(&self, row: &SheetRow) -> String {
        format!("{} row {}", self.file_name(), row.number)
    }

    /// "/data/CASME2-coding-20140508.xlsx row 14": the prefix of an error about a row.
    pub(super) fn at(&self, row: &SheetRow) -> String {
        format!("{} row {}", self.path.display(), row.number)
    }
}

/// One worksheet read as it is, for sheets without a header row (CAS(ME)^2's coding sheet).
#[derive(Debug, Clone)]
pub(super) struct Worksheet {
    /// The worksheet's name; `None` for a CSV file.
    pub name: Option<String>,
    /// Rows holding at least one non-blank cell, with their spreadsheet row numbers.
    pub rows: Vec<SheetRow>,
}

/// Every worksheet of the file (a CSV file is one unnamed worksheet), in workbook order.
pub(super) fn read_worksheets(path: &Path) -> Result<Vec<Worksheet>> {
    Ok(read_tables(path)?
        .into_iter()
        .map(|(name, rows)| Worksheet {
            name,
            rows: rows
                .into_iter()
                .filter(|(_, cells)| cells.iter().any(|c| !c.is_blank()))
                .map(|(number, cells)| SheetRow { number, cells })
                .collect(),
        })
        .collect())
}

fn describe(column: Column) -> String {
    if column.0.len() == 1 {
        format!("{:?}", column.name())
    } else {
        let others: Vec<String> = column.0[1..].iter().map(|a| format!("{a:?}")).collect();
        format!("{:?} (or {})", column.name(), others.join(", "))
    }
}

/// Lowercase letters and digits only, so "Onset Frame", "OnsetFrame" and "onset_frame" agree.
fn normalise(name: &str) -> String {
    name.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

/// (worksheet name, rows as (1-based number, cells)) for every worksheet of the file.
type Table = (Option<String>, Vec<(usize, Vec<Cell>)>);

fn read_tables(path: &Path) -> Result<Vec<Table>> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    if ext == "csv" {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let text = String::from_utf8_lossy(&bytes);
        let rows = parse_csv(text.strip_prefix('\u{feff}').unwrap_or(&text))
            .with_context(|| format!("{}: not a readable CSV file", path.display()))?;
        return Ok(vec![(None, rows)]);
    }
    let mut workbook = open_workbook_auto(path)
        .with_context(|| format!("cannot open {} as a spreadsheet (.xlsx, .xlsm, .xls, .ods or .csv)", path.display()))?;
    let mut tables = Vec::new();
    for name in workbook.sheet_names() {
        let range = workbook.worksheet_range(&name).with_context(|| format!("{}: cannot read worksheet {name:?}", path.display()))?;
        let (row0, col0) = range.start().unwrap_or((0, 0));
        let rows = range
            .rows()
            .enumerate()
            .map(|(i, cells)| {
                let mut row = vec![Cell::Empty; col0 as usize];
                row.extend(cells.iter().map(cell_of));
                (row0 as usize + i + 1, row)
            })
            .collect();
        tables.push((Some(name), rows));
    }
    Ok(tables)
}

fn cell_of(data: &Data) -> Cell {
    match data {
        Data::Empty => Cell::Empty,
        Data::Int(i) => Cell::Number(*i as f64),
        Data::Float(v) => Cell::Number(*v),
        Data::String(s) => Cell::Text(s.clone()),
        other => Cell::Text(other.to_string()),
    }
}

/// RFC 4180 CSV (the `csv` crate): fields optionally double-quoted, quoted fields may span
/// lines, rows may have different lengths; blank lines are skipped. Each record is numbered by
/// the line it starts on. A blank field is an empty cell.
fn parse_csv(text: &str) -> Result<Vec<(usize, Vec<Cell>)>> {
    // The reader takes a quote left open as running to the end of the file; a sheet that does
    // that is cut or broken, so the quotes must pair up.
    if text.matches('"').count() % 2 == 1 {
        bail!("a quoted field is never closed (the file holds an odd number of double quotes)");
    }
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(text.as_bytes());
    let mut records = Vec::new();
    let mut record = csv::ByteRecord::new();
    // A record's position is where the reader stood before it, which may still be on the end of
    // the previous line: skip those line ends, then count lines up to the record's first byte.
    let bytes = text.as_bytes();
    let line_of = |mut at: usize| {
        while bytes.get(at).is_some_and(|b| matches!(b, b'\r' | b'\n')) {
            at += 1;
        }
        1 + bytes[..at.min(bytes.len())].iter().filter(|&&b| b == b'\n').count()
    };
    loop {
        let start = reader.position().byte() as usize;
        if !reader.read_byte_record(&mut record)? {
            break;
        }
        let line = line_of(start);
        let cells = record
            .iter()
            .map(|field| match String::from_utf8_lossy(field) {
                f if f.trim().is_empty() => Cell::Empty,
                f => Cell::Text(f.into_owned()),
            })
            .collect();
        records.push((line, cells));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::testdata::{X, write_xlsx};

    const SUBJECT: Column = Column(&["Subject"]);
    const ONSET: Column = Column(&["Onset Frame", "Onset"]);
    const EMOTION: Column = Column(&["Estimated Emotion"]);

    #[test]
    fn finds_the_header_below_description_rows_and_keeps_spreadsheet_row_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("codes.xlsx");
        let mut rows = vec![vec![X::S("A description of the coding")], vec![], vec![X::S("Key:"), X::S("more text")]];
        rows.push(vec![X::S("Subject"), X::S("Filename"), X::S("OnsetFrame"), X::B, X::S("Estimated  emotion")]);
        rows.push(vec![X::N(6.0), X::S("006_1_2"), X::N(5562.0), X::B, X::S("Anger")]);
        rows.push(vec![]);
        rows.push(vec![X::S("7"), X::S("007_6_1"), X::S("41"), X::B, X::S("Other")]);
        write_xlsx(&path, &[("Sheet1", rows)]);
        let sheet = Sheet::read(&path, &[SUBJECT, ONSET, EMOTION]).unwrap();
        assert_eq!(sheet.header_row, 4);
        let (s, o, e) = (sheet.column(SUBJECT).unwrap(), sheet.column(ONSET).unwrap(), sheet.column(EMOTION).unwrap());
        assert_eq!((s, o, e), (0, 2, 4));
        assert_eq!(sheet.rows.len(), 2);
        assert_eq!(sheet.rows[0].number, 5);
        assert_eq!(sheet.rows[1].number, 7);
        assert_eq!(sheet.rows[0].cell(s).text(), "6");
        assert_eq!(sheet.rows[0].cell(o).integer(), Some(5562));
        assert_eq!(sheet.rows[1].cell(o).integer(), Some(41));
        assert_eq!(sheet.rows[1].cell(e).text(), "Other");
        assert_eq!(sheet.source(&sheet.rows[1]), "codes.xlsx row 7");
    }

    #[test]
    fn a_missing_column_names_the_column_and_the_columns_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("codes.xlsx");
        write_xlsx(&path, &[("Sheet1", vec![vec![X::S("Subject"), X::S("Filename"), X::S("Emotion")]])]);
        let err = Sheet::read(&path, &[SUBJECT, ONSET]).unwrap_err().to_string();
        assert!(err.contains("codes.xlsx") && err.contains("\"Onset Frame\""), "{err}");
        assert!(err.contains("row 1") && err.contains("Subject, Filename, Emotion"), "{err}");
    }

    #[test]
    fn later_worksheets_are_searched_for_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("book.xlsx");
        let first = vec![vec![X::S("readme")]];
        let second = vec![vec![X::S("Subject"), X::S("Onset")], vec![X::S("spNO.1"), X::N(3.0)]];
        write_xlsx(&path, &[("about", first), ("label", second)]);
        let sheet = Sheet::read(&path, &[SUBJECT, ONSET]).unwrap();
        assert_eq!(sheet.rows.len(), 1);
        assert_eq!((sheet.rows[0].number, sheet.rows[0].cell(0).text()), (2, "spNO.1".to_string()));
    }

    #[test]
    fn csv_quotes_blank_lines_and_line_numbers() {
        let text = "\u{feff}Subject,Filename,Onset\r\n01,\"EP02, \"\"a\"\"\",46\n\n\"02\",\"multi\nline\",\n";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("coding.csv");
        std::fs::write(&path, text).unwrap();
        let sheet = Sheet::read(&path, &[SUBJECT, ONSET]).unwrap();
        assert_eq!(sheet.header_row, 1);
        assert_eq!(sheet.rows.len(), 2);
        assert_eq!(sheet.rows[0].number, 2);
        assert_eq!(sheet.rows[0].cell(1).text(), "EP02, \"a\"");
        assert_eq!(sheet.rows[1].number, 4);
        assert_eq!(sheet.rows[1].cell(0).text(), "02");
        assert_eq!(sheet.rows[1].cell(1).text(), "multi\nline");
        assert_eq!(sheet.rows[1].cell(2), &Cell::Empty);
        assert!(parse_csv("a,\"b\n").is_err());
    }

    #[test]
    fn worksheets_without_a_header_keep_every_row_and_its_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("book.xlsx");
        let data = vec![vec![X::N(1.0), X::S("anger1_1")], vec![], vec![X::N(2.0), X::S("happy1_2")]];
        write_xlsx(&path, &[("code", data), ("naming rule1", vec![vec![X::N(15.0), X::S("s15"), X::N(1.0)]])]);
        let sheets = read_worksheets(&path).unwrap();
        let names: Vec<Option<&str>> = sheets.iter().map(|s| s.name.as_deref()).collect();
        assert_eq!(names, [Some("code"), Some("naming rule1")]);
        let rows: Vec<(usize, String)> = sheets[0].rows.iter().map(|r| (r.number, r.cell(1).text())).collect();
        assert_eq!(rows, [(1, "anger1_1".to_string()), (3, "happy1_2".to_string())]);
        assert_eq!(sheets[1].rows[0].cell(2).integer(), Some(1));
        assert_eq!(sheets[1].rows[0].cell(7), &Cell::Empty);
    }

    #[test]
    fn cells_read_whole_numbers_from_numbers_and_text() {
        assert_eq!(Cell::Number(46.0).integer(), Some(46));
        assert_eq!(Cell::Number(46.5).integer(), None);
        assert_eq!(Cell::Text(" 12 ".into()).integer(), Some(12));
        assert_eq!(Cell::Text("-1".into()).integer(), Some(-1));
        assert_eq!(Cell::Text("12.0".into()).integer(), Some(12));
        assert_eq!(Cell::Text("/".into()).integer(), None);
        assert_eq!(Cell::Empty.integer(), None);
        assert_eq!(Cell::Number(1.0).text(), "1");
        assert_eq!(Cell::Number(2.5).text(), "2.5");
    }
}
