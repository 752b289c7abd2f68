mod devcache;
mod mitm;
mod ops;
mod props;
mod proxy;
mod reliability;
mod stampede;
mod store;
