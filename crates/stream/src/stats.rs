//! Per-frame statistics (min, max, mean, sum of the pixels): the processing step of the demo
//! workflow, and a small example of work done on frames as they stream.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use pva_codec::{PodArray, ScalarArray, Value};
use serde::Serialize;

use crate::frame::Frame;

/// The statistics of one frame's pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FrameStats {
    /// The frame number.
    pub unique_id: i64,
    /// Pixels counted.
    pub count: u64,
    /// Smallest pixel value (NaN pixels are left out of min and max).
    pub min: f64,
    /// Largest pixel value.
    pub max: f64,
    /// Mean pixel value.
    pub mean: f64,
    /// Sum of the pixel values.
    pub sum: f64,
}

impl FrameStats {
    /// The header of [`FrameStats::csv_row`] rows.
    pub const CSV_HEADER: &'static str = "uniqueId,count,min,max,mean,sum";

    /// The statistics of `frame`: of its pixel array, or of its value for a scalar frame;
    /// `None` for string data or an empty array.
    pub fn of(frame: &Frame) -> Option<FrameStats> {
        let (count, min, max, sum) = match frame.data() {
            Some(array) => fold_array(array)?,
            None => {
                let v = frame.value.get("value").and_then(Value::as_f64)?;
                (1, v, v, v)
            }
        };
        if count == 0 {
            return None;
        }
        Some(FrameStats {
            unique_id: frame.meta.unique_id,
            count,
            min,
            max,
            mean: sum / count as f64,
            sum,
        })
    }

    /// One CSV line (without the newline), in the order of [`FrameStats::CSV_HEADER`].
    pub fn csv_row(&self) -> String {
        format!(
            "{},{},{},{},{},{}",
            self.unique_id, self.count, self.min, self.max, self.mean, self.sum
        )
    }
}

/// A statistics CSV file: the header, then one [`FrameStats::csv_row`] per frame written, from
/// any number of processing threads. Failures are kept, and the first is returned at the end.
pub struct StatsFile {
    path: PathBuf,
    out: Mutex<BufWriter<File>>,
    rows: AtomicU64,
    error: Mutex<Option<String>>,
}

impl StatsFile {
    /// Create `path` (and its directory) and write the header.
    pub fn create(path: &Path) -> Result<StatsFile, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create the directory {}: {e}", dir.display()))?;
        }
        let file =
            File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let mut out = BufWriter::new(file);
        writeln!(out, "{}", FrameStats::CSV_HEADER)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(StatsFile {
            path: std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
            out: Mutex::new(out),
            rows: AtomicU64::new(0),
            error: Mutex::new(None),
        })
    }

    /// The file's path (absolute when it could be made so).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write the frame's row and return its statistics; the first failure is kept for
    /// [`StatsFile::finish`].
    pub fn write(&self, frame: &Frame) -> Option<FrameStats> {
        let Some(stats) = FrameStats::of(frame) else {
            self.fail(format!(
                "frame {} has no numeric data to take statistics of",
                frame.meta.unique_id
            ));
            return None;
        };
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        match writeln!(out, "{}", stats.csv_row()) {
            Ok(()) => {
                self.rows.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => self.fail(format!("cannot write {}: {err}", self.path.display())),
        }
        Some(stats)
    }

    fn fail(&self, message: String) {
        self.error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(message);
    }

    /// Flush the file; the rows written, or the first failure.
    pub fn finish(&self) -> Result<u64, String> {
        if let Some(message) = self
            .error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            return Err(message);
        }
        self.out
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flush()
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))?;
        Ok(self.rows.load(Ordering::Relaxed))
    }
}

/// Count, min, max and sum of the elements, as doubles.
fn fold(values: impl Iterator<Item = f64>) -> (u64, f64, f64, f64) {
    values.fold(
        (0, f64::INFINITY, f64::NEG_INFINITY, 0.0),
        |(n, lo, hi, sum), v| (n + 1, lo.min(v), hi.max(v), sum + v),
    )
}

/// Fold a typed array over a borrowed slice when its bytes allow (no copy), converting each
/// element to a double.
fn fold_pod<T: pva_codec::Element>(
    array: &PodArray<T>,
    to_f64: impl Fn(T) -> f64,
) -> (u64, f64, f64, f64) {
    fold(array.to_cow().iter().map(|&v| to_f64(v)))
}

fn fold_array(array: &ScalarArray) -> Option<(u64, f64, f64, f64)> {
    Some(match array {
        ScalarArray::Bool(b) => fold(b.iter().map(|&v| f64::from(u8::from(v)))),
        ScalarArray::I8(a) => fold_pod(a, f64::from),
        ScalarArray::I16(a) => fold_pod(a, f64::from),
        ScalarArray::I32(a) => fold_pod(a, f64::from),
        ScalarArray::I64(a) => fold_pod(a, |v| v as f64),
        ScalarArray::U8(a) => fold_pod(a, f64::from),
        ScalarArray::U16(a) => fold_pod(a, f64::from),
        ScalarArray::U32(a) => fold_pod(a, f64::from),
        ScalarArray::U64(a) => fold_pod(a, |v| v as f64),
        ScalarArray::F32(a) => fold_pod(a, f64::from),
        ScalarArray::F64(a) => fold_pod(a, |v| v),
        ScalarArray::String(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pva_codec::nt::{NdArrayFrame, NtNdArray};

    fn frame(data: ScalarArray, id: i32) -> Frame {
        let n = data.len() as i32;
        let value = NtNdArray::new()
            .build_value(NdArrayFrame::new(data, &[n], id))
            .unwrap();
        Frame::from_value(value).unwrap()
    }

    #[test]
    fn statistics_of_an_integer_frame() {
        let f = frame(ScalarArray::U16(PodArray::from_vec(vec![1, 5, 3, 7])), 9);
        let s = FrameStats::of(&f).unwrap();
        assert_eq!(
            s,
            FrameStats {
                unique_id: 9,
                count: 4,
                min: 1.0,
                max: 7.0,
                mean: 4.0,
                sum: 16.0
            }
        );
        assert_eq!(s.csv_row(), "9,4,1,7,4,16");
        assert_eq!(
            FrameStats::CSV_HEADER.split(',').count(),
            s.csv_row().split(',').count()
        );
    }

    #[test]
    fn statistics_of_float_and_bool_frames_and_none_for_empty_ones() {
        let f = frame(
            ScalarArray::F64(PodArray::from_vec(vec![-1.5, 2.5, f64::NAN])),
            1,
        );
        let s = FrameStats::of(&f).unwrap();
        assert_eq!((s.min, s.max, s.count), (-1.5, 2.5, 3));
        assert!(s.sum.is_nan(), "a NaN pixel makes the sum NaN");
        let b = frame(ScalarArray::Bool(vec![true, false, true]), 2);
        assert_eq!(FrameStats::of(&b).unwrap().sum, 2.0);
        let empty = frame(ScalarArray::I32(PodArray::from_vec(Vec::new())), 3);
        assert_eq!(FrameStats::of(&empty), None);
    }
}
