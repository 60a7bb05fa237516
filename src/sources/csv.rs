//! CSV source (`type: csv`): streams the rows of a CSV file (or stdin, `path: "-"`).
//!
//! Dialect: a configurable delimiter and quote character; a header row (trimmed) or column
//! names declared in the config (`columns`, with `header: false` when the file has no header
//! row); gzip, detected from a `.gz` extension or forced with `compression`.
//!
//! The file is never loaded whole. A blocking task splits it into rows with the `csv` crate,
//! has them turned into records in batches on `crate::compute`'s pool (every core works; see
//! [`CONVERT_BATCH`]) and sends each record, in file order, through a bounded channel, so a
//! slow consumer holds the reader back (backpressure) and memory stays flat for files of any
//! size. The reader stops as soon as the stream is dropped.
//!
//! What goes wrong where:
//! - The file cannot be opened → [`SourceError::Open`]; a bad header (empty, duplicate or
//!   not UTF-8 column names, no header at all) or an I/O error mid-file → [`SourceError::Read`].
//!   Both end the stream: the pull is incomplete.
//! - One bad row (wrong number of fields, invalid UTF-8) → a [`Rejection`] with its line;
//!   the pull goes on.
//!
//! Each record's origin is the line it *starts* on (1-based, the header is line 1), so rows
//! after a quoted multi-line field still point at the right line. Values are kept as written
//! (strings, empty cells as empty strings); the mapping trims them and omits empty ones.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{Source, SourceError, SourceItem};
use crate::mapping::{Origin, Record, Rejection};

/// Rows buffered between the reader and the consumer. Enough to keep both busy; small enough
/// that memory does not grow with the file.
const CHANNEL_CAPACITY: usize = 256;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// `type: csv`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CsvSourceConfig {
    /// Path to the CSV file; relative paths are resolved against the config file's directory.
    pub path: PathBuf,
    /// The field separator: one ASCII character, `,` by default (`;` and `"\t"` are common in
    /// spreadsheet exports).
    #[serde(default)]
    pub delimiter: Delimiter,
    /// The quote character, `"` by default (`'` in some exports).
    #[serde(default)]
    pub quote: Quote,
    /// Whether the first row is a header row (default `true`). With `false`, `columns` must
    /// name the columns.
    #[serde(default = "default_true")]
    pub header: bool,
    /// Column names, in file order. When given with `header: true`, the file's header row is
    /// skipped and these names are used instead.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// `auto` (default: gzip when the path ends in `.gz`), `gzip` or `none`.
    #[serde(default)]
    pub compression: Compression,
}

fn default_true() -> bool {
    true
}

impl CsvSourceConfig {
    /// Pure checks serde cannot express.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.quote.0 == self.delimiter.0 {
            out.push(("quote".into(), "the quote and the delimiter must differ".into()));
        }
        match &self.columns {
            None if !self.header => out.push((
                "columns".into(),
                "`header: false` needs `columns`: the list of column names in file order".into(),
            )),
            Some(cols) => {
                if let Err(e) = check_names(cols.iter().map(|c| Ok(c.trim().to_string()))) {
                    out.push(("columns".into(), e));
                }
            }
            None => {}
        }
        if self.path.as_os_str().is_empty() {
            out.push(("path".into(), "missing: a file path, or `-` for stdin".into()));
        }
        out
    }
}

/// Whether the input is compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// gzip when the path ends in `.gz`.
    #[default]
    Auto,
    Gzip,
    None,
}

/// A CSV quote character: a single ASCII character other than a line break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote(u8);

impl Default for Quote {
    fn default() -> Self {
        Self(b'"')
    }
}

impl<'de> Deserialize<'de> for Quote {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let mut chars = s.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) if c.is_ascii() && c != '\r' && c != '\n' => Ok(Self(c as u8)),
            _ => Err(serde::de::Error::custom(format!(
                "the csv quote must be one ascii character other than a line break, found {s:?}"
            ))),
        }
    }
}

impl Serialize for Quote {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&char::from(self.0).to_string())
    }
}

/// A CSV field separator: a single ASCII character other than a quote or a line break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiter(u8);

impl Delimiter {
    /// The delimiter for `c`, or why `c` cannot be one.
    pub fn new(c: char) -> Result<Self, String> {
        match c {
            '"' | '\r' | '\n' => Err(format!("{c:?} cannot be a csv delimiter")),
            c if c.is_ascii() => Ok(Self(c as u8)),
            c => Err(format!("the csv delimiter must be one ascii character, found {c:?}")),
        }
    }

    /// The delimiter byte.
    pub fn byte(self) -> u8 {
        self.0
    }
}

impl Default for Delimiter {
    fn default() -> Self {
        Self(b',')
    }
}

impl<'de> Deserialize<'de> for Delimiter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let mut chars = s.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => Delimiter::new(c).map_err(serde::de::Error::custom),
            _ => Err(serde::de::Error::custom(format!(
                "the csv delimiter must be one ascii character, found {s:?}"
            ))),
        }
    }
}

impl Serialize for Delimiter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&char::from(self.0).to_string())
    }
}

/// Streams the rows of one CSV file.
pub struct CsvSource {
    dialect: Dialect,
}

/// Everything the blocking reader needs, owned.
#[derive(Debug, Clone)]
struct Dialect {
    /// `None` reads stdin.
    path: Option<PathBuf>,
    delimiter: u8,
    quote: u8,
    header: bool,
    columns: Option<Vec<String>>,
    gzip: bool,
}

impl Dialect {
    fn shown(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => "stdin".to_string(),
        }
    }
}

impl CsvSource {
    pub fn new(config: &CsvSourceConfig, base_dir: &Path) -> Self {
        let path = (config.path.as_os_str() != "-").then(|| base_dir.join(&config.path));
        let gzip = match config.compression {
            Compression::Gzip => true,
            Compression::None => false,
            Compression::Auto => {
                path.as_ref().and_then(|p| p.extension()).is_some_and(|e| e == "gz")
            }
        };
        Self {
            dialect: Dialect {
                path,
                delimiter: config.delimiter.byte(),
                quote: config.quote.0,
                header: config.header,
                columns: config
                    .columns
                    .as_ref()
                    .map(|c| c.iter().map(|n| n.trim().to_string()).collect()),
                gzip,
            },
        }
    }
}

impl CsvSource {
    /// Read rows from `bytes` (uncompressed) with this source's dialect, the way a pull reads
    /// its file: every row, or the error that ends the read. For fuzzing and tests.
    pub fn read_bytes(&self, bytes: &[u8]) -> Vec<Result<SourceItem, SourceError>> {
        let mut out = Vec::new();
        let input: Box<dyn Read> = Box::new(std::io::Cursor::new(bytes.to_vec()));
        read_rows(&self.dialect, input, false, &mut |item| {
            out.push(item);
            true
        });
        out
    }
}

impl Source for CsvSource {
    fn check(&self) -> BoxFuture<'_, Result<String, SourceError>> {
        let dialect = self.dialect.clone();
        Box::pin(async move {
            let Some(path) = dialect.path.clone() else {
                // Reading stdin here would consume the data the run needs.
                return Ok("csv from stdin (not read by check)".to_string());
            };
            let shown = dialect.shown();
            let meta = tokio::fs::metadata(&path)
                .await
                .map_err(|source| SourceError::Open { path: shown.clone(), source })?;
            if !meta.is_file() {
                return Err(SourceError::Read {
                    path: shown,
                    message: "not a regular file".into(),
                });
            }
            // Read the header (and the first row) through the real reader: this catches a
            // wrong delimiter, a bad gzip stream or a bad header before a run does.
            let mut first = self.pull().take(1);
            match first.next().await {
                Some(Err(e)) => Err(e),
                _ => Ok(format!("csv file {shown}: readable ({} bytes)", meta.len())),
            }
        })
    }

    fn pull(&self) -> BoxStream<'static, Result<SourceItem, SourceError>> {
        let dialect = self.dialect.clone();
        // Nothing starts until the stream is first polled, so building a source or a stream
        // never touches the file (and needs no runtime).
        let shown = dialect.shown();
        let stream = futures::stream::once(async move {
            let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
            let task = tokio::task::spawn_blocking(move || read_file(&dialect, &tx));
            // If the reader panics, the channel just closes, which would look like a complete
            // pull. Awaiting the task after the last row turns that into an error instead.
            let end = futures::stream::once(task).filter_map(move |done| {
                let shown = shown.clone();
                async move {
                    done.err().map(|e| {
                        Err(SourceError::Read {
                            path: shown,
                            message: format!("the csv reader task failed: {e}"),
                        })
                    })
                }
            });
            ReceiverStream::new(rx).chain(end)
        })
        .flatten();
        Box::pin(stream)
    }
}

type Tx = mpsc::Sender<Result<SourceItem, SourceError>>;

/// Read `path` and send every row; runs on a blocking thread. Returns early when the
/// receiver is gone.
fn read_file(dialect: &Dialect, tx: &Tx) {
    let shown = dialect.shown();
    let raw: Box<dyn Read> = match &dialect.path {
        None => Box::new(std::io::stdin().lock()),
        Some(path) => match File::open(path) {
            Ok(f) => Box::new(f),
            Err(source) => {
                let _ = tx.blocking_send(Err(SourceError::Open { path: shown.clone(), source }));
                return;
            }
        },
    };
    let raw: Box<dyn Read> = if dialect.gzip {
        // MultiGz: `cat a.gz b.gz` is a valid gzip file with two members.
        Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(raw)))
    } else {
        raw
    };
    // This runs on a blocking thread; rows are converted on the compute pool.
    read_rows(dialect, raw, true, &mut |item| tx.blocking_send(item).is_ok());
}

/// Read CSV rows from `raw` (already decompressed), handing each item to `emit` until it
/// returns `false` or the input ends, converting rows on the compute pool when `parallel` (see
/// [`CONVERT_BATCH`]). A header or I/O problem is emitted as an error and ends the read.
fn read_rows(
    dialect: &Dialect,
    raw: Box<dyn Read>,
    parallel: bool,
    emit: &mut dyn FnMut(Result<SourceItem, SourceError>) -> bool,
) {
    let shown = dialect.shown();
    let read_error = |message: String| SourceError::Read { path: shown.clone(), message };
    let input = match skip_bom(raw) {
        Ok(r) => r,
        Err(e) => {
            emit(Err(read_error(e.to_string())));
            return;
        }
    };
    let lines = Rc::new(RefCell::new(LineIndex::default()));
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(dialect.delimiter)
        .quote(dialect.quote)
        // We read the header ourselves (to check it) and count fields ourselves (so that a
        // short row is a rejection of that row, not an error of the whole file).
        .has_headers(false)
        .flexible(true)
        .from_reader(Tracked { inner: input, offset: 0, lines: Rc::clone(&lines) });

    let mut row = csv::ByteRecord::new();
    let headers = match (&dialect.columns, dialect.header) {
        (Some(columns), false) => columns.clone(),
        (columns, _) => match reader.read_byte_record(&mut row) {
            Ok(true) => match columns {
                // Declared names win over the file's header row, which is skipped.
                Some(c) => c.clone(),
                None => match header_names(&row) {
                    Ok(h) => h,
                    Err(message) => {
                        emit(Err(read_error(message)));
                        return;
                    }
                },
            },
            Ok(false) => {
                emit(Err(read_error("the file is empty, expected a header row".into())));
                return;
            }
            Err(e) => {
                emit(Err(read_error(e.to_string())));
                return;
            }
        },
    };

    let mut out = Converter::new(headers, &shown, parallel, emit);
    loop {
        match reader.read_byte_record(&mut row) {
            Ok(true) => {
                let start = row.position().map_or(0, csv::Position::byte);
                let line = lines.borrow_mut().line_at(start);
                let next = csv::ByteRecord::with_capacity(row.as_slice().len(), row.len());
                if !out.push(std::mem::replace(&mut row, next), line) {
                    return;
                }
            }
            Ok(false) => {
                out.finish();
                return;
            }
            // With `flexible` and byte records, the csv crate only fails on I/O: the rest of
            // the file is unknown, so the pull is incomplete.
            Err(e) => {
                if out.finish() {
                    (out.emit)(Err(read_error(e.to_string())));
                }
                return;
            }
        }
    }
}

/// Rows turned into records per task, and tasks at once. The csv crate splits the input into
/// rows on the reading thread (the cheap part, and the only one that must see the file in
/// order: quoted fields span lines); turning rows into records (UTF-8 checks, one string per
/// field) runs on `crate::compute`'s pool, and the records are taken back in file order, so line
/// numbers and the order of rows stay exactly as a single reader gives them.
const CONVERT_BATCH: usize = 512;
const CONVERT_IN_FLIGHT: usize = 2;

/// Rows on their way to becoming records (see [`CONVERT_BATCH`]).
struct Converter<'e> {
    headers: std::sync::Arc<[String]>,
    shown: String,
    /// Whether rows are converted on the compute pool; if not (fuzzing, `read_bytes`) they
    /// are converted inline.
    parallel: bool,
    batch: Vec<(csv::ByteRecord, u64)>,
    in_flight: VecDeque<crate::compute::Task<Vec<SourceItem>>>,
    emit: &'e mut dyn FnMut(Result<SourceItem, SourceError>) -> bool,
}

impl<'e> Converter<'e> {
    fn new(
        headers: Vec<String>,
        shown: &str,
        parallel: bool,
        emit: &'e mut dyn FnMut(Result<SourceItem, SourceError>) -> bool,
    ) -> Self {
        Self {
            headers: headers.into(),
            shown: shown.to_string(),
            parallel,
            batch: Vec::with_capacity(CONVERT_BATCH),
            in_flight: VecDeque::new(),
            emit,
        }
    }

    /// Take one row that starts on `line`; `false` when the consumer is gone (stop reading).
    fn push(&mut self, row: csv::ByteRecord, line: u64) -> bool {
        self.batch.push((row, line));
        if self.batch.len() < CONVERT_BATCH {
            return true;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(CONVERT_BATCH));
        if !self.parallel {
            return self.send(convert(&self.headers, batch));
        }
        let headers = std::sync::Arc::clone(&self.headers);
        self.in_flight.push_back(crate::compute::spawn(move || convert(&headers, batch)));
        self.in_flight.len() <= CONVERT_IN_FLIGHT || self.take_one()
    }

    /// Every row taken so far, converted and emitted in order; `false` when the consumer is
    /// gone or a conversion failed (then the failure was emitted).
    fn finish(&mut self) -> bool {
        let batch = std::mem::take(&mut self.batch);
        let ok = self.in_flight.is_empty() || self.drain();
        ok && self.send(convert(&self.headers, batch))
    }

    fn drain(&mut self) -> bool {
        while !self.in_flight.is_empty() {
            if !self.take_one() {
                return false;
            }
        }
        true
    }

    /// Wait for the oldest batch and emit it.
    fn take_one(&mut self) -> bool {
        let Some(task) = self.in_flight.pop_front() else { return true };
        match futures::executor::block_on(task) {
            Ok(items) => self.send(items),
            Err(e) => {
                (self.emit)(Err(SourceError::Read {
                    path: self.shown.clone(),
                    message: format!("the csv conversion task failed: {e}"),
                }));
                false
            }
        }
    }

    fn send(&mut self, items: Vec<SourceItem>) -> bool {
        items.into_iter().all(|item| (self.emit)(Ok(item)))
    }
}

fn convert(headers: &[String], rows: Vec<(csv::ByteRecord, u64)>) -> Vec<SourceItem> {
    rows.iter().map(|(row, line)| to_record(headers, row, *line)).collect()
}

/// The input as the csv reader sees it, noting where every line break byte is.
///
/// The csv crate's own line numbers lag by one after a CRLF: a record ends at the `\r`, and
/// its `\n` is only counted when the next record is read, after that record's position was
/// taken. So we count lines ourselves from the record's byte offset, which is exact.
struct Tracked<R> {
    inner: R,
    offset: u64,
    lines: Rc<RefCell<LineIndex>>,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut lines = self.lines.borrow_mut();
        for (i, &b) in buf[..n].iter().enumerate() {
            if b == b'\n' || b == b'\r' {
                lines.breaks.push_back((self.offset + i as u64, b));
            }
        }
        self.offset += n as u64;
        Ok(n)
    }
}

/// Line break bytes not yet behind the current record. Records arrive in byte order, so
/// everything before a record's start can be folded into a count: memory stays bounded by the
/// reader's read-ahead plus one record.
#[derive(Default)]
struct LineIndex {
    /// Offset and byte (`\r` or `\n`) of each line break byte not yet counted.
    breaks: VecDeque<(u64, u8)>,
    /// `\n` bytes before the last record start asked about.
    newlines_before: u64,
}

impl LineIndex {
    /// The 1-based line of the first content byte of a record whose position is `start`.
    /// The csv reader puts a record's start before the line breaks it skips (a pending `\n`
    /// of CRLF, blank lines), so those are counted too.
    fn line_at(&mut self, start: u64) -> u64 {
        while let Some(&(offset, byte)) = self.breaks.front() {
            if offset >= start {
                break;
            }
            self.newlines_before += u64::from(byte == b'\n');
            self.breaks.pop_front();
        }
        let skipped = self
            .breaks
            .iter()
            .zip(start..)
            .take_while(|((offset, _), expected)| offset == expected)
            .filter(|((_, byte), _)| *byte == b'\n')
            .count() as u64;
        1 + self.newlines_before + skipped
    }
}

/// Skip a UTF-8 byte order mark, which spreadsheet tools like to write. Without this the
/// first column would be named `\u{feff}id`, and a quoted first header would not parse.
fn skip_bom(mut file: Box<dyn Read>) -> std::io::Result<impl Read> {
    let mut head = [0u8; 3];
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let start = if head[..filled] == *UTF8_BOM { filled } else { 0 };
    Ok(Cursor::new(head[start..filled].to_vec()).chain(file))
}

/// The column names: trimmed, non-empty, unique, UTF-8.
fn header_names(row: &csv::ByteRecord) -> Result<Vec<String>, String> {
    check_names(row.iter().enumerate().map(|(i, raw)| {
        std::str::from_utf8(raw)
            .map(|s| s.trim().to_string())
            .map_err(|_| format!("header column {} is not valid utf-8", i + 1))
    }))
}

/// Column names must be non-empty and unique.
fn check_names(
    names_in: impl Iterator<Item = Result<String, String>>,
) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = Vec::new();
    for (i, name) in names_in.enumerate() {
        let column = i + 1;
        let name = name?;
        if name.is_empty() {
            return Err(format!("header column {column} has an empty name"));
        }
        if let Some(first) = names.iter().position(|n| *n == name) {
            return Err(format!(
                "header column {column} repeats the name `{name}` of column {}",
                first + 1
            ));
        }
        names.push(name);
    }
    Ok(names)
}

/// One data row as a record, or the reason it is unreadable.
fn to_record(headers: &[String], row: &csv::ByteRecord, line: u64) -> SourceItem {
    let origin = Origin::Line(line);
    let reject = |reason: String| Rejection {
        origin: origin.clone(),
        external_id: None,
        field: None,
        reason,
    };
    if row.len() != headers.len() {
        return Err(reject(format!(
            "expected {} fields (one per header column), found {}",
            headers.len(),
            row.len()
        )));
    }
    let mut fields = serde_json::Map::with_capacity(headers.len());
    for (name, raw) in headers.iter().zip(row.iter()) {
        match std::str::from_utf8(raw) {
            Ok(s) => {
                fields.insert(name.clone(), serde_json::Value::String(s.to_string()));
            }
            Err(_) => {
                return Err(Rejection {
                    field: Some(name.clone()),
                    ..reject(format!("field `{name}` is not valid utf-8"))
                });
            }
        }
    }
    Ok(Record { origin, fields })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(data: &[u8], starts: &[u64]) -> Vec<u64> {
        let index = Rc::new(RefCell::new(LineIndex::default()));
        let mut r = Tracked { inner: data, offset: 0, lines: Rc::clone(&index) };
        std::io::copy(&mut r, &mut std::io::sink()).unwrap();
        starts.iter().map(|&s| index.borrow_mut().line_at(s)).collect()
    }

    #[test]
    fn line_index_counts_pending_crlf_and_blank_lines() {
        // "h\r\n1\r\n\r\n2": the csv reader reports starts at the pending `\n` bytes.
        assert_eq!(lines_of(b"h\r\n1\r\n\r\n2", &[0, 2, 5]), [1, 2, 4]);
        assert_eq!(lines_of(b"h\n1\n2\n", &[0, 2, 4]), [1, 2, 3]);
    }

    #[test]
    fn delimiter_rules() {
        assert_eq!(Delimiter::new('\t').map(Delimiter::byte), Ok(b'\t'));
        assert!(Delimiter::new('"').is_err());
        assert!(Delimiter::new('\n').is_err());
        assert!(Delimiter::new('§').is_err());
    }
}
