//! The PV set of an areaDetector ADSimDetector with a PVA plugin, over a [`SimDet`]'s frames:
//! `P cam1:Acquire`, `P cam1:NumImages`, `P cam1:AcquireTime`, `P cam1:ArrayCounter` (each with
//! its `_RBV` readback) and the frames on `P Pva1:Image`, with areaDetector's semantics.
//!
//! * `Acquire` is an NTEnum (`Done`, `Acquire`), as QSRV serves the driver's busy record: putting
//!   `Acquire` takes `NumImages` frames, one every `AcquireTime` seconds, then it returns to `Done`;
//!   putting `Done` stops early. `Acquire_RBV` (`Done`, `Acquiring`) follows it.
//! * `ArrayCounter` keeps counting from one acquisition to the next; each frame's `uniqueId` is the
//!   counter after it was incremented. A put to `ArrayCounter` sets it (0 restarts the numbering).
//! * `Pva1:Image` holds the last frame between acquisitions, as the plugin does.
//!
//! So a Bluesky device written for a real ADSimDetector served over PVA drives this one too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pva::server::{PutRequest, SharedPv};
use pva_codec::nt::{Alarm, EnumValue, NtEnum, NtScalar, TimeStamp};
use pva_codec::{ScalarType, Status, StructValue, Value};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::simdet::SimDet;

/// The suffix of each PV (the PV name is prefix + suffix).
pub mod names {
    /// NTEnum `Done`/`Acquire`, writable: start or stop an acquisition.
    pub const ACQUIRE: &str = "cam1:Acquire";
    /// NTEnum `Done`/`Acquiring`: whether an acquisition runs.
    pub const ACQUIRE_RBV: &str = "cam1:Acquire_RBV";
    /// NTScalar int, writable: frames one acquisition takes.
    pub const NUM_IMAGES: &str = "cam1:NumImages";
    /// NTScalar int: readback of `NumImages`.
    pub const NUM_IMAGES_RBV: &str = "cam1:NumImages_RBV";
    /// NTScalar double, writable: seconds per frame.
    pub const ACQUIRE_TIME: &str = "cam1:AcquireTime";
    /// NTScalar double: readback of `AcquireTime`.
    pub const ACQUIRE_TIME_RBV: &str = "cam1:AcquireTime_RBV";
    /// NTScalar int, writable: sets the frame counter.
    pub const ARRAY_COUNTER: &str = "cam1:ArrayCounter";
    /// NTScalar int: the frame counter (the last frame's `uniqueId`).
    pub const ARRAY_COUNTER_RBV: &str = "cam1:ArrayCounter_RBV";
    /// NTNDArray: the frames (the PVA plugin's output).
    pub const IMAGE: &str = "Pva1:Image";
}

const ACQUIRE_CHOICES: [&str; 2] = ["Done", "Acquire"];
const ACQUIRE_RBV_CHOICES: [&str; 2] = ["Done", "Acquiring"];

/// The detector's settings at start-up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdSimConfig {
    /// Frames one acquisition takes (`NumImages`).
    pub num_images: i32,
    /// Seconds per frame (`AcquireTime`); 0 goes as fast as the slowest subscriber takes frames.
    pub acquire_time: f64,
}

/// What one acquisition did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Acquisition {
    /// Frames published.
    pub frames: u64,
    /// `uniqueId` of the first frame (0 when none was published).
    pub first_id: i64,
    /// `uniqueId` of the last frame (0 when none was published).
    pub last_id: i64,
    /// Seconds from the start to the last frame.
    pub elapsed_s: f64,
    /// True when a put of `Done` ended it before `NumImages` frames.
    pub stopped: bool,
}

/// What the PVs' put handlers hand to [`AdSim::run`].
enum Request {
    Start,
    Stop,
}

/// The settings and counter the PVs share.
#[derive(Debug)]
struct Settings {
    num_images: i32,
    acquire_time: f64,
    counter: i64,
}

/// A simulated ADSimDetector: its PVs and the task that acquires.
pub struct AdSim {
    det: Arc<SimDet>,
    settings: Arc<Mutex<Settings>>,
    pvs: Vec<(&'static str, SharedPv)>,
    requests: mpsc::UnboundedReceiver<Request>,
}

/// An NTScalar of type `t` holding `value`, stamped now.
fn scalar(t: ScalarType, value: impl Into<Value>) -> StructValue {
    NtScalar::new(t)
        .build_value(value, &Alarm::none(), TimeStamp::now())
        .expect("the settings are numbers of the PVs' types")
}

/// An NTEnum selecting `index` of `choices`, stamped now.
fn choice(index: i32, choices: [&str; 2]) -> StructValue {
    NtEnum::build_value(
        &EnumValue::new(index, choices),
        &Alarm::none(),
        TimeStamp::now(),
    )
}

fn put_number(put: &PutRequest, path: &str) -> Option<f64> {
    put.value.get(path).and_then(Value::as_f64)
}

fn lock(settings: &Mutex<Settings>) -> std::sync::MutexGuard<'_, Settings> {
    settings.lock().unwrap_or_else(|e| e.into_inner())
}

/// A writable NTScalar setting whose accepted puts `apply` stores and `rbv` shows.
fn setting(
    initial: StructValue,
    rbv: &SharedPv,
    apply: impl Fn(f64) -> Result<StructValue, String> + Send + Sync + 'static,
) -> SharedPv {
    let rbv = rbv.clone();
    SharedPv::builder(initial)
        .on_put(move |put| {
            let wanted = put_number(put, "value")
                .ok_or_else(|| Status::error("the put has no numeric value"))?;
            let value = apply(wanted).map_err(Status::error)?;
            rbv.post(value.clone());
            Ok(Some(value))
        })
        .build()
}

impl AdSim {
    /// The PVs of a detector publishing `det`'s frames, with `config`'s settings and the
    /// counter at 0. The frames are posted on `det.pv()`, served as `Pva1:Image`.
    pub fn new(det: Arc<SimDet>, config: AdSimConfig) -> AdSim {
        let settings = Arc::new(Mutex::new(Settings {
            num_images: config.num_images,
            acquire_time: config.acquire_time,
            counter: 0,
        }));
        let (send, requests) = mpsc::unbounded_channel();
        let acquire_rbv = SharedPv::readonly(choice(0, ACQUIRE_RBV_CHOICES));
        let acquire = {
            let acquire_rbv = acquire_rbv.clone();
            SharedPv::builder(choice(0, ACQUIRE_CHOICES))
                .on_put(move |put| {
                    let index = put.value.get("value.index").and_then(Value::as_i64);
                    let request = match index {
                        Some(0) => Request::Stop,
                        Some(1) => Request::Start,
                        _ => return Err(Status::error("Acquire takes 0 (Done) or 1 (Acquire)")),
                    };
                    if matches!(request, Request::Start) {
                        // Acquiring shows before the put completes, as the driver sets it: a
                        // client that waits for Done after its put never sees the Done of before.
                        acquire_rbv.post(choice(1, ACQUIRE_RBV_CHOICES));
                    }
                    let _ = send.send(request);
                    Ok(None)
                })
                .build()
        };

        let num_images_rbv = SharedPv::readonly(scalar(ScalarType::I32, config.num_images));
        let num_images = {
            let settings = settings.clone();
            setting(
                scalar(ScalarType::I32, config.num_images),
                &num_images_rbv,
                move |n| {
                    if !(1.0..=f64::from(i32::MAX)).contains(&n) {
                        return Err(format!("NumImages {n}: must be at least 1"));
                    }
                    lock(&settings).num_images = n as i32;
                    Ok(scalar(ScalarType::I32, n as i32))
                },
            )
        };
        let acquire_time_rbv = SharedPv::readonly(scalar(ScalarType::F64, config.acquire_time));
        let acquire_time = {
            let settings = settings.clone();
            setting(
                scalar(ScalarType::F64, config.acquire_time),
                &acquire_time_rbv,
                move |t| {
                    if !(t.is_finite() && t >= 0.0) {
                        return Err(format!("AcquireTime {t}: must be 0 or more seconds"));
                    }
                    lock(&settings).acquire_time = t;
                    Ok(scalar(ScalarType::F64, t))
                },
            )
        };
        let array_counter_rbv = SharedPv::readonly(scalar(ScalarType::I32, 0));
        let array_counter = {
            let settings = settings.clone();
            setting(scalar(ScalarType::I32, 0), &array_counter_rbv, move |n| {
                if !(0.0..=f64::from(i32::MAX)).contains(&n) {
                    return Err(format!("ArrayCounter {n}: must be 0 or more"));
                }
                lock(&settings).counter = n as i64;
                Ok(scalar(ScalarType::I32, n as i32))
            })
        };
        let pvs = vec![
            (names::ACQUIRE, acquire),
            (names::ACQUIRE_RBV, acquire_rbv),
            (names::NUM_IMAGES, num_images),
            (names::NUM_IMAGES_RBV, num_images_rbv),
            (names::ACQUIRE_TIME, acquire_time),
            (names::ACQUIRE_TIME_RBV, acquire_time_rbv),
            (names::ARRAY_COUNTER, array_counter),
            (names::ARRAY_COUNTER_RBV, array_counter_rbv),
            (names::IMAGE, det.pv().clone()),
        ];
        AdSim {
            det,
            settings,
            pvs,
            requests,
        }
    }

    /// Every PV with its name suffix (serve each as prefix + suffix).
    pub fn pvs(&self) -> &[(&'static str, SharedPv)] {
        &self.pvs
    }

    fn pv(&self, suffix: &str) -> &SharedPv {
        // Every suffix asked for is one of `names`, all in `pvs`.
        &self
            .pvs
            .iter()
            .find(|(name, _)| *name == suffix)
            .expect("a PV of the set")
            .1
    }

    /// Serve acquisitions as `Acquire` is put, calling `done` after each, until the PVs are
    /// dropped (or the future is dropped, which stops a running acquisition).
    pub async fn run(mut self, mut done: impl FnMut(&Acquisition)) {
        let stop = Arc::new(AtomicBool::new(false));
        let mut running: Option<tokio::task::JoinHandle<Acquisition>> = None;
        let _stop_on_drop = StopOnDrop(stop.clone());
        loop {
            let finished = async {
                match running.as_mut() {
                    Some(task) => task.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                request = self.requests.recv() => match request {
                    None => break,
                    Some(Request::Start) if running.is_none() => {
                        stop.store(false, Ordering::Relaxed);
                        running = Some(tokio::spawn(self.acquire(stop.clone())));
                    }
                    Some(Request::Start) => {}
                    Some(Request::Stop) => stop.store(true, Ordering::Relaxed),
                },
                result = finished => {
                    running = None;
                    if let Ok(acquisition) = result {
                        done(&acquisition);
                    }
                }
            }
        }
    }

    /// One acquisition as a task of its own: `NumImages` frames, `AcquireTime` apart, numbered
    /// on from the counter; then `Acquire` back to `Done`.
    fn acquire(&self, stop: Arc<AtomicBool>) -> impl std::future::Future<Output = Acquisition> {
        let (det, settings) = (self.det.clone(), self.settings.clone());
        let acquire = self.pv(names::ACQUIRE).clone();
        let acquire_rbv = self.pv(names::ACQUIRE_RBV).clone();
        let counter_rbv = self.pv(names::ARRAY_COUNTER_RBV).clone();
        async move {
            let (num_images, acquire_time) = {
                let s = lock(&settings);
                (s.num_images.max(1) as u64, s.acquire_time)
            };
            let period = Duration::from_secs_f64(acquire_time);
            let start = tokio::time::Instant::now();
            let mut acquisition = Acquisition {
                frames: 0,
                first_id: 0,
                last_id: 0,
                elapsed_s: 0.0,
                stopped: false,
            };
            for k in 1..=num_images {
                if acquire_time > 0.0 {
                    tokio::time::sleep_until(start + period.mul_f64(k as f64)).await;
                } else {
                    while !det.pv().has_room() && !stop.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                if stop.load(Ordering::Relaxed) {
                    acquisition.stopped = true;
                    break;
                }
                let id = {
                    let mut s = lock(&settings);
                    s.counter = if s.counter >= i64::from(i32::MAX) {
                        1
                    } else {
                        s.counter + 1
                    };
                    s.counter
                };
                det.pv().post(det.frame(id as i32));
                counter_rbv.post(scalar(ScalarType::I32, id as i32));
                if acquisition.frames == 0 {
                    acquisition.first_id = id;
                }
                acquisition.frames += 1;
                acquisition.last_id = id;
            }
            acquisition.elapsed_s = start.elapsed().as_secs_f64();
            // The put of Acquire that started this is stored after its handler returned: wait
            // (briefly) until it shows, so that Done is never overwritten by it.
            let deadline = Instant::now() + Duration::from_secs(1);
            while acquire.current().get("value.index").and_then(Value::as_i64) != Some(1)
                && Instant::now() < deadline
                && !acquisition.stopped
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            acquire.post(choice(0, ACQUIRE_CHOICES));
            acquire_rbv.post(choice(0, ACQUIRE_RBV_CHOICES));
            acquisition
        }
    }
}

/// Stops a running acquisition when [`AdSim::run`] ends or is dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simdet::SimDetConfig;
    use pva::server::PeerInfo;
    use pva_codec::BitSet;

    fn sim(num_images: i32, acquire_time: f64) -> AdSim {
        let det = SimDet::new(SimDetConfig {
            nx: 8,
            ny: 4,
            dtype: ScalarType::U8,
            fps: 0.0,
            frames: None,
            runtime: None,
            start_delay: Duration::ZERO,
            seed: 1,
            counter: false,
            start_id: 1,
        })
        .unwrap();
        AdSim::new(
            Arc::new(det),
            AdSimConfig {
                num_images,
                acquire_time,
            },
        )
    }

    fn put(pv: &SharedPv, path: &str, value: impl Into<Value>) -> Status {
        let mut v = pv.current();
        v.set(path, value.into()).unwrap();
        let bit = v.desc().bit_of(path).unwrap();
        let peer = PeerInfo {
            addr: "127.0.0.1:1".parse().unwrap(),
            method: "anonymous".into(),
            user: String::new(),
            host: String::new(),
        };
        pv.put(&v, &BitSet::with(bit), &peer)
    }

    fn value(pv: &SharedPv, path: &str) -> i64 {
        pv.current().get(path).and_then(Value::as_i64).unwrap()
    }

    async fn acquire_once(
        acquire: &SharedPv,
        acquisitions: &mut mpsc::UnboundedReceiver<Acquisition>,
    ) {
        assert!(put(acquire, "value.index", 1i32).is_success());
        let acquisition = tokio::time::timeout(Duration::from_secs(10), acquisitions.recv())
            .await
            .expect("the acquisition ends")
            .unwrap();
        assert!(!acquisition.stopped);
    }

    #[tokio::test]
    async fn acquire_takes_num_images_counts_on_and_returns_to_done() {
        let sim = sim(3, 0.001);
        let pvs: Vec<(&str, SharedPv)> = sim.pvs().to_vec();
        let pv = |suffix: &str| pvs.iter().find(|(n, _)| *n == suffix).unwrap().1.clone();
        let (tx, mut acquisitions) = mpsc::unbounded_channel();
        tokio::spawn(sim.run(move |a| {
            let _ = tx.send(*a);
        }));

        acquire_once(&pv(names::ACQUIRE), &mut acquisitions).await;
        assert_eq!(value(&pv(names::ACQUIRE), "value.index"), 0);
        assert_eq!(value(&pv(names::ACQUIRE_RBV), "value.index"), 0);
        assert_eq!(value(&pv(names::ARRAY_COUNTER_RBV), "value"), 3);
        assert_eq!(
            value(&pv(names::IMAGE), "uniqueId"),
            3,
            "the last frame stays"
        );

        // The counter keeps counting, with NumImages as written.
        assert!(put(&pv(names::NUM_IMAGES), "value", 2i32).is_success());
        assert_eq!(value(&pv(names::NUM_IMAGES_RBV), "value"), 2);
        acquire_once(&pv(names::ACQUIRE), &mut acquisitions).await;
        assert_eq!(value(&pv(names::ARRAY_COUNTER_RBV), "value"), 5);
        assert_eq!(value(&pv(names::IMAGE), "uniqueId"), 5);

        // Unless written.
        assert!(put(&pv(names::ARRAY_COUNTER), "value", 0i32).is_success());
        assert_eq!(value(&pv(names::ARRAY_COUNTER_RBV), "value"), 0);
        acquire_once(&pv(names::ACQUIRE), &mut acquisitions).await;
        assert_eq!(value(&pv(names::IMAGE), "uniqueId"), 2);

        assert!(!put(&pv(names::NUM_IMAGES), "value", 0i32).is_success());
        assert!(!put(&pv(names::ACQUIRE_TIME), "value", -1.0).is_success());
        assert!(!put(&pv(names::ACQUIRE), "value.index", 5i32).is_success());
    }

    #[tokio::test]
    async fn a_put_of_done_stops_an_acquisition_early() {
        let sim = sim(1000, 0.01);
        let acquire = sim.pv(names::ACQUIRE).clone();
        let pvs_rbv = sim.pv(names::ACQUIRE_RBV).clone();
        let (tx, mut acquisitions) = mpsc::unbounded_channel();
        tokio::spawn(sim.run(move |a| {
            let _ = tx.send(*a);
        }));
        assert!(put(&acquire, "value.index", 1i32).is_success());
        assert_eq!(
            value(&pvs_rbv, "value.index"),
            1,
            "Acquiring shows when the put completes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(put(&acquire, "value.index", 0i32).is_success());
        let acquisition = tokio::time::timeout(Duration::from_secs(10), acquisitions.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(acquisition.stopped);
        assert!(acquisition.frames < 1000);
        assert_eq!(value(&acquire, "value.index"), 0);
    }
}
