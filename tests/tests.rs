mod devcache;
mod ops;
mod proxy;
mod stampede;
mod store;
