//! The leader's reports: status, dashboards, integration status, KPIs and instance logs,
//! rewritten only when their contents change (spaced, and refreshed every few minutes).

use trinity_core::schema::{MultiInstanceStatus, Timeline};

use super::*;
use crate::page;

impl Coordinator {
    pub(super) fn write_reports(
        &mut self,
        fleet: &Fleet,
        view: &FleetView,
        epoch: u64,
        now: DateTime<Utc>,
    ) {
        // Reports are for people: at most one round of writes every REPORT_SPACING, so that a
        // burst of handoffs does not add a burst of commits racing the handoffs' own.
        if let Some(last) = self.reports_at
            && (now - last).to_std().unwrap_or_default() < REPORT_SPACING
        {
            return;
        }
        self.reports_at = Some(now);
        // The fleet's last action may be an earlier leader's (a restart, a failover, or its
        // status arriving late): the newest one the status file holds counts.
        if let Ok(doc) = fsio::load::<MultiInstanceStatus>(&self.tree.multi_status_file())
            && let (Some(at), Some(what)) =
                (doc.value.last_autonomous_action, doc.value.last_action)
            && self.last_action.as_ref().is_none_or(|(mine, _)| *mine < at)
        {
            self.last_action = Some((at, what));
        }
        let mut status = report::status(fleet, view, &self.pc, epoch, now);
        if let Some((at, what)) = &self.last_action {
            status.last_autonomous_action = Some(*at);
            status.last_action = Some(what.clone());
        }
        for h in &mut status.handoffs {
            if self.runs.contains_key(&h.id) {
                h.phase = "verifying".to_owned();
            }
        }
        let dashboard = report::dashboard(fleet, view, now);
        let empty = Timeline::new(self.pc.clone(), now);
        let timeline = self.timeline.as_ref().unwrap_or(&empty);
        let html = page::dashboard_html(&page::Page {
            status: &status,
            dashboard: &dashboard,
            timeline,
            credit: &view.credit,
            now,
        });
        let timeline_json = to_json(timeline);
        let integration = report::integration_status(&status, view);
        let kpi_week = report::kpi_week(&status, now);
        let (Some(status_json), Some(dash_json)) = (to_json(&status), to_json(&dashboard)) else {
            tracing::error!("cannot encode the fleet status (a bug)");
            return;
        };
        let status_key = report::without_times(&status_json);
        let dash_key = report::without_times(&dash_json);
        // The page changes with what it shows: the status, the credit figures, the timeline
        // and the tokens (its countdowns are written "as of" its time).
        let tokens: Vec<_> = view.credit.values().map(|c| &c.tokens_by_day).collect();
        let timeline_key = timeline_json.as_deref().map(report::without_times);
        let html_key = format!("{status_key}\n{dash_key}\n{timeline_key:?}\n{tokens:?}");
        self.write_if_changed(self.tree.multi_status_file(), status_json, status_key);
        self.write_if_changed(self.tree.credit_dashboard_file(), dash_json, dash_key);
        self.write_if_changed(self.tree.dashboard_html_file(), html, html_key);
        if let (Some(json), Some(key)) = (timeline_json, timeline_key) {
            self.write_if_changed(self.tree.timeline_file(), json, key);
        }
        let key = report::without_times(&integration);
        if let Ok(id) = RecordId::new("integration-status") {
            self.write_report(self.tree.report_file(&id), integration, key, false);
        }
        let key = report::without_times(&kpi_week);
        if let Ok(id) = RecordId::new(format!("kpi-{}", now.format("%G-W%V"))) {
            self.write_report(self.tree.report_file(&id), kpi_week, key, false);
        }
        for (pc, text) in report::instance_logs(fleet, view, now) {
            let key = report::without_times(&text);
            let path = self.tree.instance_log_file(&pc, now.date_naive());
            self.write_report(path, text, key, false);
        }
    }

    /// Writes a report when `key` (its contents, time stamps aside) changed, or every few
    /// minutes.
    pub(super) fn write_if_changed(&mut self, path: PathBuf, text: String, key: String) {
        self.write_report(path, text, key, true);
    }

    /// Writes a report when `key` changed; with `refresh`, also every few minutes (files whose
    /// time stamp tells people the leader is alive: the status and the dashboards).
    pub(super) fn write_report(&mut self, path: PathBuf, text: String, key: String, refresh: bool) {
        let now = self.now();
        if let Some((old, at)) = self.written.get(&path)
            && *old == key
            && (!refresh || (now - *at).to_std().unwrap_or_default() < REFRESH)
        {
            return;
        }
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        match fsio::write_atomic(&path, text.as_bytes()) {
            Ok(()) => {
                self.written.insert(path, (key, now));
            }
            Err(e) => tracing::warn!(error = %e, "cannot write a report"),
        }
    }
}

fn to_json<T: Schema>(value: &T) -> Option<String> {
    trinity_core::schema::to_bytes(value)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}
