//! Clusters, in the order data flows: YAML specs (`spec`, `validate`) → concrete layouts
//! (`plan`) → backends that bring them up (`backend`, `backends/`) → the running cluster
//! (`control`) → faults and workloads on it → `run` (orchestration) → `report`. `compose` exports
//! a plan for docker-compose. ARCHITECTURE.md at the root has the whole map.

pub mod backend;
pub mod backends;
pub mod compose;
pub mod control;
pub mod devfaults;
pub mod faults;
pub mod groups;
pub mod health;
pub mod k8s;
pub mod limits;
pub mod plan;
pub mod report;
pub mod run;
pub mod serve;
pub mod spec;
pub mod validate;
pub mod workloads;
