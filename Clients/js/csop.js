// CSOP browser client: replaced by the client's source
