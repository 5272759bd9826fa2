//! `bookstore serve`: every service in one process.

use anyhow::Context;

use crate::config::Config;
use crate::web::{Remotes, WebApp};

/// Every service in one process (`bookstore serve`): the trend and recommendation services
/// first, then the web service calling them; all stop on `shutdown`, or when one of them fails.
pub async fn serve_all(
    config: &Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let trend = crate::trend::build(config).await?;
    let recommend = crate::recommend::build(config).await?;
    let remotes = Remotes {
        trend_url: match &config.web.trend_url {
            None => Some(format!("http://{}", trend.local_addr()?)),
            Some(_) => config.trend_url(),
        },
        recommend_url: match &config.web.recommend_url {
            None => Some(format!("http://{}", recommend.local_addr()?)),
            Some(_) => config.recommend_url(),
        },
    };
    let web = WebApp::build_with(config, remotes).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown.await;
            stop.cancel();
        }
    });
    let mut services = tokio::task::JoinSet::new();
    services.spawn(web.run_until_stopped(stop.clone().cancelled_owned()));
    services.spawn(trend.run_until_stopped(stop.clone().cancelled_owned()));
    services.spawn(recommend.run_until_stopped(stop.clone().cancelled_owned()));
    // When one service ends (a fatal error), the others stop too, and the first error is
    // returned.
    let mut result = Ok(());
    while let Some(done) = services.join_next().await {
        stop.cancel();
        let done = done.context("a service task failed").and_then(|r| r);
        if result.is_ok() {
            result = done;
        }
    }
    result
}
