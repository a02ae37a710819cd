//! Reconcile and flush: a pure planner over plain data and an executor that applies a plan.

pub mod planner;
