mod devcache;
mod mitm;
mod ops;
mod proxy;
mod stampede;
mod store;
