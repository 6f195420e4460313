//! HTTP-level tests: each starts the real app on port 0 with a fresh data
//! dir and talks to it over HTTP. One test binary for all of them.

mod admin;
mod aftersale;
mod cache;
mod catalog;
mod checkout;
mod cli;
mod crash;
mod distributed;
mod flashsale;
mod fulfilment;
mod fuzz;
mod helpers;
mod input;
mod notify;
mod ops;
mod orders;
mod overload;
mod payments;
mod restart;
mod tenancy;
mod tracking;
