//! A minimal HTTP/1.1 client (hyper, plain http, one keep-alive connection)
//! for `POST /auth/login`.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

/// Any failure talking HTTP.
pub type HttpError = Box<dyn std::error::Error + Send + Sync>;

/// The login request body.
#[derive(Serialize)]
struct Login<'a> {
    username: &'a str,
    password: &'a str,
}

/// The part of a successful login answer the generator uses.
#[derive(Deserialize)]
struct Issued {
    token: String,
}

/// What `POST /auth/login` answered.
#[derive(Debug)]
pub enum LoginAnswer {
    /// 200, with the token.
    Token(String),
    /// Any other status.
    Refused(StatusCode),
}

/// One keep-alive HTTP/1.1 connection to the server.
pub struct HttpConnection {
    sender: http1::SendRequest<Full<Bytes>>,
    host: String,
}

impl HttpConnection {
    /// Connects to `addr`.
    ///
    /// # Errors
    /// When the TCP connection or the HTTP handshake fails.
    pub async fn open(addr: SocketAddr) -> Result<Self, HttpError> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(connection);
        Ok(Self {
            sender,
            host: addr.to_string(),
        })
    }

    /// `POST /auth/login {username, password}`.
    ///
    /// # Errors
    /// When the connection fails or a 200 carries no token.
    pub async fn login(
        &mut self,
        username: &str,
        password: &str,
    ) -> Result<LoginAnswer, HttpError> {
        let body = serde_json::to_vec(&Login { username, password })?;
        let request = Request::post("/auth/login")
            .header(HOST, &self.host)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if status == StatusCode::OK {
            let issued: Issued = serde_json::from_slice(&body)?;
            Ok(LoginAnswer::Token(issued.token))
        } else {
            Ok(LoginAnswer::Refused(status))
        }
    }
}
