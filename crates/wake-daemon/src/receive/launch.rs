//! Launching: how the work reaches an agent (none needed, queued for the one running, or a
//! new one), journaled as a launch before the agent starts, then started exactly once.

use super::*;

impl Receiver {
    /// Decides how the work reaches an agent: nothing to start (the coordinator's work went
    /// elsewhere), queued for the agent still running, or a launch — the tasks file written
    /// and the launch id chosen, journaled as [`Step::Launching`] before anything starts.
    pub(super) fn prepare_launch(&self, h: &Handoff, won: &[TaskId]) -> Result<Step, WakeError> {
        let Some(id) = h.id() else {
            return Ok(Step::Refused {
                reason: "the handoff has no valid id".to_owned(),
            });
        };
        // Work the coordinator gave whose tasks all went elsewhere (another PC holds them at a
        // newer epoch, or they are done): there is nothing for an agent to do.
        if h.reason.is_coordinators() && won.is_empty() {
            tracing::info!(handoff = %id, "its tasks went elsewhere meanwhile; no agent started");
            return Ok(Step::Launched {
                pid: None,
                how: "nothing left to do: its tasks went elsewhere".to_owned(),
            });
        }
        // Otherwise the agent starts even when the handoff lists no task: the handoff file
        // itself says what the other PC was doing.
        let tasks: Vec<TaskRef> = h
            .task_queue
            .iter()
            .filter(|t| won.contains(&t.id))
            .cloned()
            .collect();
        if self.config.wake.queue_when_agent_running
            && let Some(running) = self.journal.agent()?
            && running.handoff != id
            && agent::is_running(running.pid, &running.launch_id)
        {
            let TasksFile(mut queued) = local::read_or_default(&running.tasks_file)?;
            for t in &tasks {
                if !queued.iter().any(|q| q.id == t.id) {
                    queued.push(t.clone());
                }
            }
            local::write(&running.tasks_file, &TasksFile(queued))?;
            tracing::info!(
                pid = running.pid,
                tasks = tasks.len(),
                "the agent is still running; queued the new work for it"
            );
            return Ok(Step::Launched {
                pid: Some(running.pid),
                how: format!("queued for the agent already running (pid {})", running.pid),
            });
        }
        local::write(&self.tree.wake_tasks_file(&id), &TasksFile(tasks))?;
        Ok(Step::Launching {
            launch_id: format!("{id}.{}", std::process::id()),
        })
    }

    /// Starts the agent of a journaled launch (its tasks file written) and records it.
    pub(super) fn launch(
        &self,
        h: &Handoff,
        won: &[TaskId],
        launch_id: String,
        report: &mut Report,
    ) -> Result<Step, WakeError> {
        let Some(id) = h.id() else {
            return Ok(Step::Refused {
                reason: "the handoff has no valid id".to_owned(),
            });
        };
        let tasks_file = self.tree.wake_tasks_file(&id);
        let current = h.current_work.as_ref().filter(|w| won.contains(&w.task_id));
        let task_id = current
            .map(|w| w.task_id.clone())
            .or_else(|| won.first().cloned());
        let mut env: Vec<(String, OsString)> = vec![
            ("TRINITY_PC".to_owned(), self.pc.as_str().into()),
            ("TRINITY_FROM_PC".to_owned(), h.from_pc.as_str().into()),
            (
                "TRINITY_HANDOFF_FILE".to_owned(),
                absolute(&self.tree.processed_handoff_file(&id)).into_os_string(),
            ),
            (
                "TRINITY_TASKS_FILE".to_owned(),
                absolute(&tasks_file).into_os_string(),
            ),
            (LAUNCH_ID_VAR.to_owned(), launch_id.clone().into()),
        ];
        if let Some(t) = &task_id {
            env.push(("TRINITY_TASK_ID".to_owned(), t.as_str().into()));
        }
        let mut command = self.config.agent.command.clone();
        if let Some(session) = current.and_then(|w| w.session.as_deref())
            && trinity_core::code::is_claude(&command)
            && self.session_file(session).is_some_and(|f| f.is_file())
            && !command.iter().any(|a| a == "--resume" || a == "-r")
        {
            command.extend(["--resume".to_owned(), session.to_owned()]);
            tracing::info!(session, "the agent resumes the conversation handed over");
        }
        let launch = Launch {
            command,
            workdir: agent::workdir(&self.config.agent.workdir, self.config_dir.as_deref()),
            env,
            log: self.tree.agent_log_file(),
            new_console: self.config.agent.new_console,
        };
        let pid = agent::spawn(&launch)?;
        tracing::info!(pid, program = %launch.command[0], handoff = %id, "started the agent");
        self.journal.save_agent(&AgentRecord {
            pid,
            launch_id,
            started_at: self.now(),
            handoff: id,
            tasks_file,
        })?;
        report.launched.push(pid);
        Ok(Step::Launched {
            pid: Some(pid),
            how: "started".to_owned(),
        })
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}
