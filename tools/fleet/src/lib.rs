//! The fleet simulator: many honest agents, each with a software TPM in this process, attesting
//! to vouchd over the agent link exactly as boards do (the same `vouch-proto` frames), by
//! check-in or in persistent sessions, and a report of how vouchd carried them.
//!
//! - [`tpm`]: the software TPM (EK, AK, ActivateCredential, quotes) in the TPM's wire formats.
//! - [`hosts`]: the simulator's TPM manufacturer CA, the firmware every host booted (a real TCG
//!   event log) and the hosts.
//! - [`agent`]: one agent's side of the link.
//! - [`vouchd`]: starting vouchd and configuring its trust through the management API.
//! - [`launch`]: the vouchd of a run: one, several replicas on a private PostgreSQL, or
//!   running ones; killing one; what the database holds at the end.
//! - [`run`]: a run: enrolment, the measured window, the report.
//!
//! Every connection goes to loopback; every loop ends at the run's end.

pub mod agent;
pub mod hosts;
pub mod launch;
pub mod run;
pub mod tpm;
pub mod vouchd;
