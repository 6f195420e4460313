//! The domain's services on in-memory ports and a clock the tests move by
//! hand: every guarantee here is proven without a database, a broker or a
//! single sleep. One test binary (each one costs a link).

mod clock;
mod memory;
mod world;

mod aftersale;
mod catalog;
mod checkout;
mod flashsale;
mod fulfilment;
mod orders;
mod payments;
mod settlement;
