//! One module per subcommand.

pub mod call;
pub mod consume;
pub mod demo;
pub mod dm;
pub mod format;
pub mod get;
pub mod host;
pub mod info;
pub mod limits;
pub mod list;
pub mod monitor;
pub mod put;
pub mod pvaclient;
pub mod relay;
pub mod serve;
pub mod simdet;
pub mod streaming;
pub mod version;
pub mod workflow;
pub mod workflow_consume;
pub mod workflow_report;

/// Wait for Ctrl-C or SIGTERM (what `docker stop` and service managers send).
pub async fn wait_for_stop_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match terminate.as_mut() {
            Some(signal) => {
                signal.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminated => {}
    }
}
