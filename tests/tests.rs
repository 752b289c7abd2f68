mod devcache;
mod proxy;
mod stampede;
mod store;
